"""``expeditor marker hold``: hold an execution marker for a session while a command runs.

This is how a tool that is not expeditor vouches for a session blocked on it: the marker is written
by this expeditor process (so it counts as an expeditor-held marker), heartbeat-touched like every
marker expeditor holds, and removed when the command ends, however it ends.

The command runs as this process's child, in its own session (``setsid``), with this process's
standard streams. A terminal's Ctrl-C therefore reaches only this process, which forwards SIGINT,
SIGTERM and SIGHUP to the command's process group once each, waits for the command to end, removes
the marker, and exits with the command's exit status (128 + N when signal N ended it, as a shell says).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import anyio
from anyio.abc import Process

from expeditor.config import Settings
from expeditor.errors import InvalidInput
from expeditor.ids import validate_identifier
from expeditor.monitor.markers import execution_marker

__all__ = ["FORWARDED_SIGNALS", "hold_marker_while_running", "marker_hold_command"]

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def marker_hold_command(
    settings: Settings, argv: Sequence[str], *, session_id: str, label: str, expires_in: float | None
) -> int:
    """The ``expeditor marker hold`` command: check its input (InvalidInput when bad), then hold and run.

    ``argv`` is the command as parsed, perhaps still led by the ``--`` that separated it from the options.
    """
    command = list(argv[1:] if argv[:1] == ["--"] else argv)
    if not command:
        raise InvalidInput("marker hold needs a command to run: expeditor marker hold --session ID -- COMMAND...")
    validate_identifier(session_id)
    validate_identifier(label, what="marker label")
    hold = partial(
        hold_marker_while_running,
        command,
        marker_dir=settings.markers_path,
        label=label,
        session_id=session_id,
        expires_at=None if expires_in is None else time.time() + expires_in,
        heartbeat_interval=settings.marker_heartbeat_interval,
    )
    return anyio.run(hold)


async def hold_marker_while_running(
    command: Sequence[str],
    *,
    marker_dir: Path,
    label: str,
    session_id: str,
    expires_at: float | None,
    heartbeat_interval: float,
) -> int:
    """Run ``command`` under a marker for ``session_id``; its exit status, shell style.

    Raises InvalidInput when the command cannot be started (the marker is gone by then).
    """
    # Installed before anything is spawned, so a signal that arrives early is forwarded, not fatal.
    with anyio.open_signal_receiver(*FORWARDED_SIGNALS) as signals:
        async with execution_marker(
            marker_dir, label, session_id, expires_at=expires_at, heartbeat_interval=heartbeat_interval
        ):
            try:
                process = await anyio.open_process(
                    list(command), stdin=None, stdout=None, stderr=None, start_new_session=True
                )
            except OSError as exc:
                raise InvalidInput(f"cannot run {command[0]!r}: {exc.strerror or exc}") from exc
            async with process, anyio.create_task_group() as group:

                async def forward() -> None:
                    async for received in signals:
                        _signal_group(process, received)

                group.start_soon(forward)
                await process.wait()
                group.cancel_scope.cancel()
    returncode = process.returncode
    assert returncode is not None  # awaited above
    return returncode if returncode >= 0 else 128 - returncode


def _signal_group(process: Process, signum: int) -> None:
    """Send ``signum`` to the command's process group (its leader is the command): its children hear it too."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)
