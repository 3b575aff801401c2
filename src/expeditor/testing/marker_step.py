"""The fake agent's ``marker`` step: hold an execution marker while silent.

This is what a session blocked on a long MCP tool call looks like from outside: nothing on
stdout, nothing in the transcript, and a marker for its id, heartbeat-touched by whoever holds
it. Variants make markers that must *not* vouch for the session: never touched (goes stale),
of another session id, owned by a dead process, past ``expires_at``, or forged (owned by a live
process that is not expeditor, touched into the future).

    - marker: {hold: 3}                               # own id, touched every 0.1 s, removed after
    - marker: {hold: 3, session_id: "<other id>"}     # someone else's marker
    - marker: {hold: 3, touch: false}                 # written once, never touched
    - marker: {hold: 3, owner: dead}                  # owner pid is a process that has exited
    - marker: {hold: 3, owner_pid: 1}                 # owner is a live process named by pid (here init)
    - marker: {hold: 3, expires_in: 0.5}              # expires_at half a second after writing
    - marker: {hold: 3, mtime_ahead: 3600}            # every touch dates the file an hour ahead

The fake agent runs as ``python -m expeditor.testing.fake_agent``: an expeditor process, so a marker
it holds for itself counts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["HoldMarker", "MarkerStep", "hold_marker"]


class HoldMarker(BaseModel):
    """How to hold the marker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hold: float = Field(gt=0, description="seconds to stay silent while the marker exists")
    label: str = "run-skill"
    session_id: str | None = Field(None, description="default: this session's own id")
    heartbeat: float = Field(0.1, gt=0, description="seconds between touches")
    touch: bool = Field(True, description="false: written once and never touched again")
    expires_in: float | None = Field(None, description="expires_at = write time + this many seconds")
    owner: Literal["self", "dead"] = "self"
    owner_pid: int | None = Field(None, gt=0, description="name this live process (pid, start time) as the owner")
    mtime_ahead: float | None = Field(None, gt=0, description="date the file this many seconds ahead at each touch")
    marker_dir: str | None = Field(None, description="default: $EXPEDITOR_MARKER_DIR")
    keep: bool = Field(False, description="leave the file behind (a holder that died without cleaning up)")


class MarkerStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    KIND: ClassVar[str] = "marker"
    marker: HoldMarker


def _dead_owner() -> tuple[int, float]:
    """The pid and start time of a process that has already exited."""
    import psutil

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    started = psutil.Process(child.pid).create_time()
    assert child.stdin is not None
    child.stdin.close()
    child.wait()
    return child.pid, started


def _owner(spec: HoldMarker) -> tuple[int, float] | None:
    """The (pid, start time) to write as the marker's owner; None for this process."""
    import psutil

    if spec.owner == "dead":
        return _dead_owner()
    if spec.owner_pid is not None:
        return spec.owner_pid, psutil.Process(spec.owner_pid).create_time()
    return None


def hold_marker(spec: HoldMarker, own_session_id: str) -> None:
    """Write the marker, stay silent for ``hold`` seconds touching it, then remove it (unless ``keep``)."""
    # Imported here: a default fake-agent run must not pay for the monitor's imports.
    from expeditor.monitor.markers import touch_marker, write_marker

    directory = spec.marker_dir or os.environ.get("EXPEDITOR_MARKER_DIR")
    if not directory:
        print("fake agent: marker step needs EXPEDITOR_MARKER_DIR or marker_dir", file=sys.stderr)
        raise SystemExit(2)
    expires_at = None if spec.expires_in is None else time.time() + spec.expires_in
    path = write_marker(
        Path(directory), spec.label, spec.session_id or own_session_id, expires_at=expires_at, owner=_owner(spec)
    )

    def touch() -> None:
        if spec.mtime_ahead is None:
            touch_marker(path)
        else:
            ahead = time.time() + spec.mtime_ahead
            os.utime(path, (ahead, ahead))

    try:
        touch()
        deadline = time.monotonic() + spec.hold
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(spec.heartbeat, remaining))
            if spec.touch:
                touch()
    finally:
        if not spec.keep:
            path.unlink(missing_ok=True)
