"""``expeditor marker hold`` as other tools run it: the real CLI in a subprocess, holding a marker while a
command runs. The command says ``holding`` once it runs (the marker exists by then) and ends when its
standard input closes, with a chosen exit status."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

import anyio
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

# Says it runs, waits for its standard input to close, then exits with the status in argv[1].
WAITING_COMMAND = [
    sys.executable,
    "-c",
    "import sys; print('holding', flush=True); sys.stdin.read(); sys.exit(int(sys.argv[1]))",
]


def marker_hold_argv(home: Path, session_id: str, *options: str, command: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "expeditor",
        "--home",
        str(home),
        "marker",
        "hold",
        "--session",
        session_id,
        *options,
        "--",
        *command,
    ]


async def first_line(process: Process) -> str:
    """The first line the process writes to stdout ("" when it ends first)."""
    assert process.stdout is not None
    text = ""
    async for chunk in TextReceiveStream(process.stdout):
        text += chunk
        if "\n" in text:
            break
    return text.partition("\n")[0]


@contextlib.asynccontextmanager
async def marker_hold(
    home: Path, session_id: str, *options: str, marker_dir: Path, exit_status: int = 0
) -> AsyncGenerator[Process]:
    """Run ``expeditor marker hold`` until its command says it runs; yield the holder process.

    Close ``process.stdin`` to end the command. On exit the holder is awaited (and killed if it hangs).
    """
    env = {
        **os.environ,
        "EXPEDITOR_MARKER_DIR": str(marker_dir),
        # The fake settings' marker_freshness is 2 s: a heartbeat at the default 10 s would let the marker go stale.
        "EXPEDITOR_MARKER_HEARTBEAT_INTERVAL": "0.1",
    }
    argv = marker_hold_argv(home, session_id, *options, command=[*WAITING_COMMAND, str(exit_status)])
    async with await anyio.open_process(argv, env=env) as process:
        try:
            with anyio.fail_after(20):
                assert await first_line(process) == "holding"
            yield process
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10) as waited:
                if process.stdin is not None:
                    await process.stdin.aclose()
                await process.wait()
            if waited.cancelled_caught:
                process.kill()
