"""Starting an agent: its executable resolved before launch, the session guard in front of it on Linux,
and the list of children the event loop owns (which a subreaper must never reap)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["GUARD", "OWN_CHILDREN", "guarded", "resolve_executable"]


class _OwnChildren:
    """The processes this event loop spawned and has not yet reaped, and spawns in progress.

    A subreaper that collects adopted orphans must never touch these: their exit statuses
    belong to the event loop.
    """

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self.spawning = 0


OWN_CHILDREN = _OwnChildren()


GUARD = Path(__file__).resolve().parent.parent / "session_guard.py"


def guarded(argv: list[str], *, cgroup: Path | None = None) -> list[str]:
    """Start the agent under the session guard on Linux, so it dies with this process (see session_guard).

    The guard is told this process's pid now, not left to read it once its interpreter is up: by then
    this process may be dead. With ``cgroup`` it joins that group before the agent exists.
    """
    if sys.platform != "linux":
        return argv
    options = ["--parent", str(os.getpid())]
    if cgroup is not None:
        options += ["--cgroup", str(cgroup)]
    return [sys.executable, "-I", "-S", str(GUARD), *options, "--", *argv]


def resolve_executable(command: str, env: Mapping[str, str], cwd: Path) -> str | None:
    """The absolute path the command would run, or None when nothing executable is there."""
    if os.sep in command:
        path = (cwd / command) if not os.path.isabs(command) else Path(command)
        return str(path) if os.access(path, os.X_OK) and path.is_file() else None
    return shutil.which(command, path=env.get("PATH", os.defpath))
