"""Finding and killing every process of a session: its group, its tree, and what escaped both.

Order matters: descendants are listed *before* anything is signalled (a killed parent's
children are reparented and vanish from its tree), SIGTERM goes to the group and to every
escapee, a bounded grace follows, then SIGKILL. A pid is only ever signalled through a
``psutil.Process`` made while the process was known to be ours, and psutil refuses to signal
a pid that was reused since (it compares the start time).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass

import anyio
import psutil

from expeditor.executor.models import KilledProcess
from expeditor.executor.proc_snapshot import SESSION_TAG_VARIABLE, ProcSnapshot, take_snapshot

__all__ = [
    "SESSION_TAG_VARIABLE",
    "TreeTarget",
    "group_member_pids",
    "running",
    "snapshot_targets",
    "tagged_processes",
    "targets_of",
    "terminate",
]


_FIRST_POLL = 0.001
_MAX_POLL = 0.02


@dataclass(frozen=True)
class TreeTarget:
    """A live process of the session, identified by pid and start time."""

    process: psutil.Process
    cmdline: tuple[str, ...]
    in_group: bool


def group_member_pids(pgid: int) -> list[int]:
    """Pids whose process group is ``pgid``: one getpgid per process, no /proc parsing."""
    members: list[int] = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid:
                members.append(pid)
        except OSError:
            continue
    return members


def running(process: psutil.Process) -> bool:
    """True while ``process`` (the same one, by start time) runs: neither gone nor a zombie."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _carries_tag(process: psutil.Process, session_tag: str) -> bool:
    try:
        return process.environ().get(SESSION_TAG_VARIABLE) == session_tag
    except psutil.Error:
        return False


def tagged_processes(
    session_tag: str, *, created_after: float = 0.0, snapshot: ProcSnapshot | None = None
) -> list[psutil.Process]:
    """Processes of this user whose environment carries the session's tag.

    This finds what left both the group and the tree, e.g. a double-forked daemon whose middle
    process is gone. Only our own processes' environments are readable, which is all we need,
    and only processes started after the session (``created_after``, epoch seconds) can carry it.
    """
    snapshot = snapshot or take_snapshot(fresh=True)
    found: list[psutil.Process] = []
    for pid in snapshot.tagged(session_tag):
        row = snapshot.by_pid.get(pid)
        if (row.start_time if row is not None else 0.0) < created_after:
            continue
        try:
            found.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return found


def snapshot_targets(
    root: psutil.Process,
    pgid: int,
    session_tag: str | None,
    extra: Iterable[psutil.Process] = (),
    *,
    fresh: bool = True,
    newer_than: float | None = None,
) -> list[TreeTarget]:
    """Every live process of the session: the root, its descendants, its group and ``extra``.

    While the root lives, its group id cannot be reused, so every member of the group is ours.
    Once the root is gone, a member counts only if it carries the session's environment tag
    (``EXPEDITOR_SESSION_ID``): the group id may by then belong to someone else. Processes
    anywhere that carry the tag are included too. With ``fresh=False`` the process table may be
    a walk another session took a few milliseconds ago (see proc_snapshot).
    """
    snapshot = take_snapshot(fresh=fresh and newer_than is None, newer_than=newer_than)
    found: dict[int, psutil.Process] = {}
    try:
        # A zombie root still holds its pid, hence its group id: the group is still ours.
        root_present = root.is_running()
    except psutil.Error:
        root_present = False
    if root_present:
        found[root.pid] = root
        for pid in snapshot.descendants(root.pid):
            with contextlib.suppress(psutil.Error):
                found.setdefault(pid, psutil.Process(pid))
    if pgid > 1:
        for pid in group_member_pids(pgid):
            if pid in found:
                continue
            try:
                member = psutil.Process(pid)
            except psutil.Error:
                continue
            if root_present or (session_tag is not None and _carries_tag(member, session_tag)):
                found[pid] = member
    for process in extra:
        found.setdefault(process.pid, process)
    if session_tag is not None:
        # Clock ticks round start times; a second of slack cannot admit a foreign process (tag check).
        for process in tagged_processes(session_tag, created_after=root.create_time() - 1, snapshot=snapshot):
            found.setdefault(process.pid, process)
    return targets_of(found.values(), pgid)


def targets_of(processes: Iterable[psutil.Process], pgid: int) -> list[TreeTarget]:
    """The live ones of ``processes`` as kill targets, with their command lines read now (for ``killed``)."""
    targets: list[TreeTarget] = []
    for process in processes:
        if process.pid == os.getpid() or not running(process):
            continue
        try:
            cmdline = tuple(process.cmdline())
            in_group = os.getpgid(process.pid) == pgid
        except (psutil.Error, OSError):
            continue
        targets.append(TreeTarget(process=process, cmdline=cmdline, in_group=in_group))
    return targets


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    if pgid <= 1:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _signal_each(targets: Iterable[TreeTarget], signum: signal.Signals) -> None:
    for target in targets:
        with contextlib.suppress(psutil.Error):
            target.process.send_signal(signum)


async def _wait_gone(targets: list[TreeTarget], deadline: float) -> list[TreeTarget]:
    """Wait until every target is gone or ``deadline`` passes; return the survivors."""
    delay = _FIRST_POLL
    survivors = [target for target in targets if running(target.process)]
    while survivors and anyio.current_time() < deadline:
        await anyio.sleep(min(delay, max(deadline - anyio.current_time(), 0)))
        delay = min(delay * 2, _MAX_POLL)
        survivors = [target for target in survivors if running(target.process)]
    return survivors


async def terminate(
    targets: list[TreeTarget], pgid: int, *, grace: float, reap_timeout: float = 2.0
) -> list[KilledProcess]:
    """SIGTERM the group and every target, wait ``grace``, SIGKILL what is left, wait for it to go.

    Returns every target with the last signal it needed. A process that survives SIGKILL past
    ``reap_timeout`` (stuck in the kernel) is still reported, as SIGKILL.
    """
    if not targets:
        return []
    # Signal the group only through a member we verified: an empty group's id may be reused.
    if not any(target.in_group for target in targets):
        pgid = 0
    _signal_group(pgid, signal.SIGTERM)
    _signal_each((t for t in targets if not t.in_group), signal.SIGTERM)
    survivors = await _wait_gone(targets, anyio.current_time() + grace)
    if survivors:
        _signal_group(pgid, signal.SIGKILL)
        _signal_each(survivors, signal.SIGKILL)
        await _wait_gone(survivors, anyio.current_time() + reap_timeout)
    needed_kill = {target.process.pid for target in survivors}
    return [
        KilledProcess(
            pid=target.process.pid,
            cmdline=list(target.cmdline),
            signal="SIGKILL" if target.process.pid in needed_kill else "SIGTERM",
            escaped=not target.in_group,
        )
        for target in targets
    ]
