"""One process-table snapshot per poll, shared by every session's child-activity watcher.

Walking ``children(recursive=True)`` per session costs a full /proc walk each time; one walk
whose parent-to-children map (built once, by the snapshot) serves every session at once
(measured in DESIGN: 13.5 ms for 50 sessions instead of 125-220 ms).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anyio
import psutil

from expeditor.executor import cgroups
from expeditor.executor.proc_snapshot import ProcSnapshot, take_snapshot
from expeditor.executor.session import LiveSession

__all__ = ["Activity", "ProcessTable"]


@dataclass(frozen=True)
class Activity:
    """A session's process tree at one instant: who is in it and the CPU time it has used."""

    taken: float
    pids: frozenset[int]
    cpu_seconds: float


class ProcessTable:
    """A cached snapshot of every process: parent links and CPU times."""

    def __init__(self) -> None:
        self._taken = float("-inf")
        self._snapshot = ProcSnapshot(taken=self._taken, rows=[])
        self.walks = 0

    def _refresh(self) -> None:
        self._snapshot = take_snapshot(fresh=True)
        self._taken = anyio.current_time()
        self.walks += 1

    def activity(self, session: LiveSession, *, max_age: float | None = None) -> Activity:
        """The session's tree from a snapshot no older than ``max_age`` (most of its interval by default).

        Sessions sampled in the same interval share one walk; a walk per interval is the most it costs.
        A session in a cgroup of its own costs no walk at all: its group lists its processes, and the
        kernel keeps their CPU time in one counter (``cpu.stat``), dead children's included.
        """
        if session.cgroup is not None:
            return _group_activity(session.cgroup, session.pid)
        max_age = session.policy.children_interval * 0.8 if max_age is None else max_age
        if anyio.current_time() - self._taken > max_age:
            self._refresh()
        below = self._snapshot.descendants(session.pid)
        # Remember every descendant ever seen, so the final kill finds those that later escape the tree.
        for pid in below:
            if pid not in session.known_descendants:
                try:
                    session.known_descendants[pid] = psutil.Process(pid)
                except psutil.Error:
                    continue
        for pid, process in list(session.known_descendants.items()):
            if pid not in below and not process.is_running():
                del session.known_descendants[pid]
        rows = self._snapshot.by_pid
        return Activity(
            taken=self._taken,
            pids=frozenset(below),
            cpu_seconds=sum(rows[pid].cpu_seconds for pid in (session.pid, *below) if pid in rows),
        )


def _group_activity(group: Path, root_pid: int) -> Activity:
    return Activity(
        taken=anyio.current_time(),
        pids=frozenset(cgroups.members(group)) - {root_pid},
        cpu_seconds=cgroups.cpu_seconds(group) or 0.0,
    )
