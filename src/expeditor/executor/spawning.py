"""Starting an agent: its executable resolved before launch, what runs in front of it on Linux (a join of
its control group, or the session guard), and the list of children the event loop owns (which a
subreaper must never reap)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import Generator, Mapping
from pathlib import Path

__all__ = ["GUARD", "OWN_CHILDREN", "guarded", "joining", "resolve_executable", "use_pidfd_exit_events"]


class _OwnChildren:
    """The processes this event loop spawned and has not yet reaped, and spawns in progress.

    A subreaper that collects adopted orphans must never touch these: their exit statuses
    belong to the event loop.
    """

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self.spawning = 0

    @contextlib.contextmanager
    def commands_in_threads(self) -> Generator[None]:
        """While open, worker threads may run commands (``subprocess.run``) the subreaper must not reap: they
        count as spawns in progress. Entered and left on the event loop's thread only."""
        self.spawning += 1
        try:
            yield
        finally:
            self.spawning -= 1


OWN_CHILDREN = _OwnChildren()


GUARD = Path(__file__).resolve().parent.parent / "session_guard.py"


def guarded(argv: list[str]) -> list[str]:
    """Start the agent under the session guard on Linux, so it dies with this process (see session_guard).

    The guard is told this process's pid now, not left to read it once its interpreter is up: by then
    this process may be dead. Only the process-tree containment needs it: under cgroups the server's
    keeper ends every session group when the server dies.
    """
    if sys.platform != "linux":
        return argv
    return [sys.executable, "-I", "-S", str(GUARD), "--parent", str(os.getpid()), "--", *argv]


# The child writes its own pid into the session's group, then becomes the agent: the agent and all it
# starts are born inside the group, and nothing stays in front of the agent (~1 ms, no memory after
# exec). A group already removed (its server died and the keeper ended it) cannot be joined: the
# agent never starts. dash and bash add PWD to the environment they pass on; it is taken out again
# when the agent's environment had none, so the agent gets exactly the environment it was given.
_JOIN_THEN_EXEC = 'echo $$ >"$0" || exit 126; exec "$@"'
_JOIN_THEN_EXEC_WITHOUT_PWD = 'echo $$ >"$0" || exit 126; unset PWD; exec "$@"'


def joining(argv: list[str], cgroup: Path, env: Mapping[str, str]) -> list[str]:
    """The argv that starts ``argv`` inside ``cgroup``: a POSIX shell joins the group, then execs it.

    The script is fixed and the agent's argv is passed as its positional arguments, never parsed.
    """
    script = _JOIN_THEN_EXEC if "PWD" in env else _JOIN_THEN_EXEC_WITHOUT_PWD
    return ["/bin/sh", "-c", script, str(cgroup / "cgroup.procs"), *argv]


def use_pidfd_exit_events() -> None:
    """Learn of children's exits from pidfds on the running event loop, not from one thread per child.

    Python 3.11's asyncio waits for each child in a thread blocked in ``waitpid`` (200 sessions, 200
    threads), and that thread collects the exit status at once, sometimes before the runner has looked
    at the process. With a pidfd the loop collects it when it gets to it. Python 3.12 does this by
    default; elsewhere (no pidfd_open, another loop) nothing changes. Call it from the event loop.
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    # The child-watcher API is deprecated from 3.12, where pidfds are the default: this runs on 3.11 only.
    policy = asyncio.get_event_loop_policy()  # pyright: ignore[reportDeprecated]
    current = policy.get_child_watcher()  # pyright: ignore[reportDeprecated]
    if isinstance(current, asyncio.PidfdChildWatcher) and current.is_active():  # pyright: ignore[reportDeprecated]
        return
    watcher = asyncio.PidfdChildWatcher()  # pyright: ignore[reportDeprecated]
    watcher.attach_loop(loop)  # pyright: ignore[reportDeprecated]
    policy.set_child_watcher(watcher)  # pyright: ignore[reportDeprecated]


def resolve_executable(command: str, env: Mapping[str, str], cwd: Path) -> str | None:
    """The absolute path the command would run, or None when nothing executable is there."""
    if os.sep in command:
        path = (cwd / command) if not os.path.isabs(command) else Path(command)
        return str(path) if os.access(path, os.X_OK) and path.is_file() else None
    return shutil.which(command, path=env.get("PATH", os.defpath))
