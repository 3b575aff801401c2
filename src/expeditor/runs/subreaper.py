"""The server as a child subreaper (Linux): orphans of its sessions are reparented to it, not to init.

A daemon an agent double-forked then stays a descendant of the server, where the process-table
walks see it. Adopted orphans are not the event loop's children, so nothing else waits for them:
``reap_adopted`` collects their exit statuses by their own pids (never ``waitpid(-1)``, which would
steal the statuses of the processes the loop spawned).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Collection

from expeditor.executor.proc_snapshot import take_snapshot

__all__ = ["become_subreaper", "reap_adopted"]

logger = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Ask Linux to reparent our descendants' orphans to us; False where that is not possible."""
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        logger.warning("could not become a child subreaper: %s", os.strerror(ctypes.get_errno()))
        return False
    return True


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            data = stream.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2 : data.rfind(b")") + 3] == b"Z"


def reap_adopted(spawned: Collection[int]) -> list[int]:
    """Collect every exited child of ours that the event loop did not spawn; returns their pids."""
    reaped: list[int] = []
    for pid in take_snapshot(fresh=True).children.get(os.getpid(), ()):
        if pid in spawned or not _zombie(pid):
            continue
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                reaped.append(pid)
    return reaped
