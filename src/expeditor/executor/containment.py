"""How a session's processes are held together so that all of them can be killed: a cgroup, or the tree.

``cgroup``: each session gets a leaf control group under one group this process owns
(``expeditor-<pid>-<start>``), which the agent's process joins before it runs any code (a shell
writes its pid to ``cgroup.procs`` and execs the agent); a process cannot
leave its cgroup on its own, so a double-forked, setsid'd daemon with a clean environment is still
in it, and one ``cgroup.kill`` ends everything. One keeper per server ends every group when the
server dies. ``tree``: the process group, a snapshot of the tree, the environment tag and the
subreaper (see process_tree), with a guard per session for the server's death; such a daemon can
escape it.
The choice is made once per process, from what the machine allows, and every result says which
applied.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
import psutil

from expeditor.executor import cgroups
from expeditor.executor.models import KilledProcess
from expeditor.executor.process_tree import running
from expeditor.executor.spawning import GUARD, OWN_CHILDREN
from expeditor.process_identity import boot_ticks, same_boot_ticks

__all__ = [
    "ContainmentKind",
    "ContainmentSetting",
    "SessionContainment",
    "choose_containment",
    "end_group",
    "end_session_group",
]

logger = logging.getLogger(__name__)

ContainmentKind = Literal["cgroup", "tree"]
ContainmentSetting = Literal["auto", "cgroup", "tree"]


@dataclass(frozen=True)
class SessionContainment:
    """The containment of one process's sessions: which kind, and for cgroups the group this process owns."""

    kind: ContainmentKind
    reason: str
    server_group: Path | None = None

    def open_session(self, session_id: str) -> Path | None:
        """The session's own group, created now (None for the tree fallback); CgroupUnavailable when it cannot be.

        The server group is made again if it went: another runtime of this process may have closed it.
        """
        if self.server_group is None:
            return None
        os.makedirs(self.server_group, exist_ok=True)
        return cgroups.create_session_group(self.server_group, session_id)

    def reap_dead_servers(self, timeout: float) -> list[str]:
        """Kill and remove the session groups of servers that died without closing: returns their names."""
        if self.server_group is None:
            return []
        reaped: list[str] = []
        for group in cgroups.dead_server_groups(self.server_group.parent, same_boot_ticks):
            if cgroups.reap_server_group(group, timeout):
                reaped.append(group.name)
            else:
                logger.warning("could not remove the control group %s of a dead server", group)
        return reaped

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncGenerator[None]:
        """While open, a keeper process (in a session of its own, so a signal to this process's group misses
        it) ends every session group of this process when it dies, SIGKILL included: the one process that
        stands in for a guard per session. Started from the event loop's thread: its parent-death signal
        follows that thread."""
        if self.server_group is None or sys.platform != "linux":
            yield
            return
        argv = [sys.executable, "-I", "-S", str(GUARD), "--keeper", "--parent", str(os.getpid())]
        keeper = await anyio.open_process(
            [*argv, "--cgroup", str(self.server_group)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        OWN_CHILDREN.pids.add(keeper.pid)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                keeper.terminate()
                with anyio.move_on_after(2):
                    await keeper.wait()
                OWN_CHILDREN.pids.discard(keeper.pid)

    def close(self) -> None:
        """Remove this process's own group once its sessions have ended (their groups went with them).

        Only the group itself: another runtime of this process may share it and still hold sessions.
        """
        if self.server_group is None:
            return
        try:
            os.rmdir(self.server_group)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # Another runtime of this process still has sessions in it, or something survived: reaped later.
            logger.info("control group %s stays: %s", self.server_group, exc)


def choose_containment(setting: ContainmentSetting) -> SessionContainment:
    """The containment this process can have, decided once: a cgroup of its own when it may create one
    (``auto`` and ``cgroup``), else the process tree (``auto`` and ``tree``). ``cgroup`` that cannot be
    had raises CgroupUnavailable, saying why."""
    if setting == "tree":
        return SessionContainment("tree", "the containment setting is tree")
    try:
        parent = cgroups.own_group()
        if parent is None:
            raise cgroups.CgroupUnavailable("this process is in no cgroup v2 group (no cgroup2 file system mounted)")
        me = os.getpid()
        # Named with the start in ticks since boot, not wall-clock time: a clock step must not make a
        # live server's sessions look like a dead one's to the next start, which kills those.
        group = cgroups.open_server_group(parent, me, float(boot_ticks(me) or 0))
    except cgroups.CgroupUnavailable as exc:
        if setting == "cgroup":
            raise
        return SessionContainment("tree", f"no usable cgroup: {exc}")
    return SessionContainment("cgroup", f"sessions get their own group under {group}", group)


@dataclass(frozen=True)
class _Listed:
    pid: int
    cmdline: list[str]
    in_group: bool


def _listed(pid: int, pgid: int) -> _Listed | None:
    """A group member as ``killed`` reports it, read straight from /proc (~10 µs; psutil's checks cost 20x
    that, paid before the first signal). None for a process already gone, or a zombie (no command line)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            raw = stream.read()
        in_group = os.getpgid(pid) == pgid
    except OSError:
        return None
    if not raw:
        return None
    return _Listed(pid, [part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0")], in_group)


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


async def end_session_group(
    group: Path, first: psutil.Process, pgid: int, *, grace: float, within: float
) -> list[KilledProcess]:
    """End a session contained by ``group``: SIGTERM, ``grace`` to go, then ``cgroup.kill`` until it is removed.

    Signal first, look later: the group is listed (one read of ``cgroup.procs``, then each member's
    command line, for ``killed``) and signalled before anything else is looked at, and no process
    table is walked. ``first`` is the session's first process, our child, which may not have joined
    the group yet (a run ended as it starts); ``pgid`` is its process group.
    """
    try:
        pids = cgroups.members(group)
    except cgroups.CgroupUnavailable as exc:
        logger.warning("control group %s could not be listed (%s); it is killed unlisted", group, exc)
        pids = []
    if first.pid not in pids:
        pids.insert(0, first.pid)
    listed = [entry for entry in (_listed(pid, pgid) for pid in pids) if entry is not None]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)  # the leader is our unreaped child: the group id cannot be reused
    for entry in listed:
        if not entry.in_group:
            _signal(entry.pid, signal.SIGTERM)
    survivors: set[int] = set()
    try:
        emptied = await anyio.to_thread.run_sync(cgroups.wait_empty, group, grace) if grace > 0 else False
        if not emptied:
            survivors = set(cgroups.members(group))
    except cgroups.CgroupUnavailable:
        survivors = {entry.pid for entry in listed}
    if first.pid not in survivors and running(first):
        # Not in the group (it never joined): only a signal reaches it.
        survivors.add(first.pid)
        with contextlib.suppress(psutil.Error):
            first.kill()
    await end_group(group, within=within)
    return [
        KilledProcess(
            pid=entry.pid,
            cmdline=entry.cmdline,
            signal="SIGKILL" if entry.pid in survivors else "SIGTERM",
            escaped=not entry.in_group,
        )
        for entry in listed
    ]


async def end_group(group: Path, *, within: float) -> None:
    """``cgroup.kill`` the session's group until it is empty and removed, for at most ``within`` seconds.

    Killed more than once when needed: a session's first process that was still starting may join the
    group after a kill (it joins before the agent runs, and a removed group it cannot join at all).
    """
    deadline = anyio.current_time() + within
    while True:
        try:
            cgroups.kill(group)
        except cgroups.CgroupUnavailable as exc:
            logger.warning("control group %s could not be killed: %s", group, exc)
            return
        remaining = deadline - anyio.current_time()
        emptied = await anyio.to_thread.run_sync(cgroups.wait_empty, group, min(max(remaining, 0.0), 0.1))
        if emptied and cgroups.remove(group):
            return
        if anyio.current_time() >= deadline:
            logger.warning("control group %s not empty %.1fs after cgroup.kill; the next start reaps it", group, within)
            return
