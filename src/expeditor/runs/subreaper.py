"""The server as a child subreaper (Linux): orphans of its sessions are reparented to it, not to init.

A daemon an agent double-forked then stays a descendant of the server, where the process-table
walks see it. Adopted orphans are not the event loop's children, so nothing else waits for them:
``reap_exited`` collects their exit statuses by their own pids (never ``waitpid(-1)``, which would
steal the statuses of the processes the loop spawned, and of the commands worker threads run, which
is why those are counted in ``OWN_CHILDREN.spawning`` while they run). ``kill_leftovers`` kills the
adopted orphans of sessions that ended, for the process-tree containment.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Collection

from expeditor.executor.proc_snapshot import SESSION_TAG_VARIABLE, take_snapshot

__all__ = ["become_subreaper", "kill_leftovers", "reap_exited"]

logger = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
_TAG_PREFIX = SESSION_TAG_VARIABLE.encode() + b"="


def become_subreaper() -> bool:
    """Ask Linux to reparent our descendants' orphans to us; False where that is not possible."""
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        logger.warning("could not become a child subreaper: %s", os.strerror(ctypes.get_errno()))
        return False
    return True


def reap_exited(spawned: Collection[int]) -> list[int]:
    """Collect the exit statuses of adopted orphans that exited, without looking at any other process.

    ``waitid(WNOWAIT)`` names an exited child without collecting it; one that is not the event loop's
    is collected by its pid. One that is the loop's own ends the round: its watcher collects it, and
    the others wait for the next round. Cost: one system call per round and per adopted exit, whatever
    runs on the host.
    """
    reaped: list[int] = []
    while True:
        try:
            exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break
        if exited is None or exited.si_pid in spawned:
            break
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(exited.si_pid, os.WNOHANG)[0] == exited.si_pid:
                reaped.append(exited.si_pid)
                continue
        break
    return reaped


def kill_leftovers(spawned: Collection[int], live_sessions: Callable[[], Collection[str]]) -> list[int]:
    """SIGKILL adopted orphans still alive whose session tag names a session that is no longer running.

    For the process-tree containment, whose sweep at a session's end can miss a process that left the
    group as it ran (under cgroups the session's group holds those, and its end removes the group).
    Walks the process table: call it only where the tree is the containment. An orphan without a tag
    (a clean-environment daemon) cannot be attributed; the README says so.
    """
    snapshot = take_snapshot(fresh=True)
    adopted = [pid for pid in snapshot.children.get(os.getpid(), ()) if pid not in spawned]
    if not adopted:
        return []
    live = set(live_sessions())
    killed: list[int] = []
    for pid in adopted:
        try:
            with open(f"/proc/{pid}/environ", "rb") as stream:
                variables = stream.read().split(b"\0")
        except OSError:
            continue
        tag = next((v.split(b"=", 1)[1] for v in variables if v.startswith(_TAG_PREFIX)), None)
        if tag is None or tag.decode(errors="replace") in live:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed
