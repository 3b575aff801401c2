"""One walk of the process table, shared by every session that looks within a few milliseconds.

When a server tears ten sessions down at once, each session's kill needs the same facts: who is
whose parent, and which processes carry which session's ``EXPEDITOR_SESSION_ID``. Walking /proc
once and reusing it for ``max_age`` costs one walk instead of ten; a reused walk is equivalent to
having looked a few milliseconds earlier, which the confirmation sweep (always fresh) covers.
The snapshot owns what is derived from the walk (the parent-to-children map, the walk below a pid,
the session tags), each built once on first use and shared by every reader of that snapshot.
On Linux it reads /proc directly; elsewhere it asks psutil.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import psutil

__all__ = ["SESSION_TAG_VARIABLE", "ProcRow", "ProcSnapshot", "take_snapshot"]

SESSION_TAG_VARIABLE = "EXPEDITOR_SESSION_ID"
_PROC = "/proc"
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_SHARED_FOR = 0.02


@dataclass(frozen=True)
class ProcRow:
    pid: int
    ppid: int
    cpu_seconds: float
    uid: int
    start_time: float


@dataclass
class ProcSnapshot:
    """Every process at one instant; its parent links, rows by pid and session tags are built on first use."""

    taken: float
    rows: list[ProcRow]
    _tags: dict[str, list[int]] | None = field(default=None)

    @cached_property
    def by_pid(self) -> Mapping[int, ProcRow]:
        """Each process's row, by pid."""
        return {row.pid: row for row in self.rows}

    @cached_property
    def children(self) -> Mapping[int, list[int]]:
        """Pids of each process's children, by parent pid."""
        children: dict[int, list[int]] = {}
        for row in self.rows:
            children.setdefault(row.ppid, []).append(row.pid)
        return children

    def descendants(self, pid: int) -> set[int]:
        """Every pid below ``pid`` in the parent links, ``pid`` itself excluded."""
        found: set[int] = set()
        pending = list(self.children.get(pid, ()))
        while pending:
            below = pending.pop()
            if below != pid and below not in found:
                found.add(below)
                pending.extend(self.children.get(below, ()))
        return found

    def tagged(self, session_tag: str) -> list[int]:
        """Pids of this user's processes whose environment carries ``session_tag``."""
        if self._tags is None:
            self._tags = _tag_index(self.rows)
        return self._tags.get(session_tag, [])


def _tag_index(rows: list[ProcRow]) -> dict[str, list[int]]:
    me, uid = os.getpid(), os.getuid()
    wanted = SESSION_TAG_VARIABLE.encode() + b"="
    index: dict[str, list[int]] = {}
    for row in rows:
        if row.uid != uid or row.pid == me:
            continue
        try:
            with open(f"{_PROC}/{row.pid}/environ", "rb") as stream:
                entries = stream.read().split(b"\0")
        except OSError:
            continue
        for entry in entries:
            if entry.startswith(wanted):
                index.setdefault(entry[len(wanted) :].decode(errors="replace"), []).append(row.pid)
                break
    return index


def _read_proc() -> list[ProcRow]:
    boot = psutil.boot_time()
    rows: list[ProcRow] = []
    for name in os.listdir(_PROC):
        if not name.isdigit():
            continue
        try:
            uid = os.stat(f"{_PROC}/{name}").st_uid
            with open(f"{_PROC}/{name}/stat", "rb") as stream:
                data = stream.read()
            # The command name may contain spaces and parentheses: the fields start after the last ')'.
            fields = data[data.rfind(b")") + 2 :].split()
            rows.append(
                ProcRow(
                    pid=int(name),
                    ppid=int(fields[1]),
                    cpu_seconds=(int(fields[11]) + int(fields[12])) / _TICKS,
                    uid=uid,
                    start_time=boot + int(fields[19]) / _TICKS,
                )
            )
        except (OSError, IndexError, ValueError):
            continue
    return rows


def _read_psutil() -> list[ProcRow]:
    rows: list[ProcRow] = []
    for process in psutil.process_iter(["ppid", "cpu_times", "uids", "create_time"]):
        info = process.info
        if info.get("ppid") is None or info.get("uids") is None:
            continue
        times = info.get("cpu_times")
        rows.append(
            ProcRow(
                pid=process.pid,
                ppid=info["ppid"],
                cpu_seconds=(times.user + times.system) if times is not None else 0.0,
                uid=info["uids"].real,
                start_time=info.get("create_time") or 0.0,
            )
        )
    return rows


_latest: ProcSnapshot | None = None


def take_snapshot(*, fresh: bool = False, newer_than: float | None = None) -> ProcSnapshot:
    """A snapshot no older than a few milliseconds; a new one when ``fresh``.

    ``newer_than`` (a ``time.monotonic()`` instant) accepts any snapshot taken after it: what a
    confirmation sweep needs is a look taken after its own signals, not a look of its own.
    """
    global _latest
    now = time.monotonic()
    if newer_than is not None and _latest is not None and _latest.taken > newer_than:
        return _latest
    if fresh or newer_than is not None or _latest is None or now - _latest.taken > _SHARED_FOR:
        _latest = ProcSnapshot(taken=now, rows=_read_proc() if os.path.isdir(_PROC) else _read_psutil())
    return _latest
