"""The session guard and the server's keeper: tiny processes so that no agent outlives its server.

The server may be SIGKILLed (Claude Code does that 500 ms after asking it to stop), alone or with its
whole process group, and a managed agent lives in its own process group, so the kernel would leave
it running. Standard library only (``python -I -S``, ~20 ms to start).

**Keeper** (``--keeper --parent PID --cgroup SERVER_GROUP``, cgroup containment): one per server, in
a session of its own, so a signal to the server's process group does not reach it. It asks Linux for
SIGUSR1 when its parent dies (``PR_SET_PDEATHSIG``) and then ends every session group of the server:
``cgroup.kill``, wait for the groups to empty, remove them, again until they are gone. A session's
agent joins its group before it runs any code, and a removed group cannot be joined, so an agent
whose start was under way when the server died never starts.

**Guard** (``--parent PID -- AGENT_ARGV...``, process-tree containment): one per session, leading the
agent's process group; it starts the agent as its child and waits for it. When its parent dies it
SIGKILLs every process carrying the session's ``EXPEDITOR_SESSION_ID`` (escapees that left the group),
then its whole process group. Otherwise it is invisible: a signal sent to it alone is passed on to the
agent, and it exits exactly as the agent did.

Both compare ``--parent`` (the server's pid as the server knows it) with ``getppid()`` once the signal
is armed: a server that died while the interpreter was starting (the signal would then be armed
against init or a subreaper) gets the same ending at once. Other systems have no parent-death
signal; there the agent is started directly and the next server start reaps what a killed server
left (the live-session registry, and leftover groups).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PARENT_DIED = signal.SIGUSR1
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


TAG_VARIABLE = b"EXPEDITOR_SESSION_ID"


def _tagged_pids(tag: bytes) -> list[int]:
    """Our processes whose environment carries the session's tag: those that left the group too."""
    me, wanted = os.getpid(), TAG_VARIABLE + b"=" + tag
    found: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as stream:
                if wanted in stream.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return found


def _kill_everything(_signum: int, _frame: object) -> None:
    """The server is gone: kill the session's escapees and its process group."""
    tag = os.environb.get(TAG_VARIABLE)
    if tag:
        for pid in _tagged_pids(tag):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _options(argv: list[str]) -> tuple[int | None, str | None, bool, list[str]]:
    """``--parent PID``, ``--cgroup DIR``, ``--keeper`` and the agent's argv after ``--``."""
    parent: int | None = None
    cgroup: str | None = None
    keeper = False
    while argv and argv[0] != "--":
        if argv[0] == "--parent" and len(argv) > 1:
            parent, argv = int(argv[1]), argv[2:]
        elif argv[0] == "--cgroup" and len(argv) > 1:
            cgroup, argv = argv[1], argv[2:]
        elif argv[0] == "--keeper":
            keeper, argv = True, argv[1:]
        else:
            break
    if argv and argv[0] == "--":
        argv = argv[1:]
    return parent, cgroup, keeper, argv


_KEEPER_PATIENCE = 10.0
"""How long the keeper keeps ending a dead server's groups: a process that cannot be killed (stuck in the
kernel) is left for the next server start, which reaps dead servers' groups."""


def _keep(parent: int, server_group: str) -> None:
    """The keeper: ends every session group of the server when the server dies (see the module's text)."""
    # cgroups.py is standard library only, written to be imported here; -I keeps its directory off the path.
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "executor"))
    import cgroups  # pyright: ignore[reportMissingImports]

    def end_server(_signum: int, _frame: object) -> None:
        deadline = time.monotonic() + _KEEPER_PATIENCE
        while True:
            try:
                if cgroups.reap_server_group(server_group, 0.1):
                    break
            except cgroups.CgroupUnavailable as exc:
                sys.stderr.write(f"session_guard: could not end the control group {server_group}: {exc}\n")
                break
            if time.monotonic() > deadline:
                break
        os._exit(0)

    signal.signal(PARENT_DIED, end_server)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(PARENT_DIED), 0, 0, 0)
    if os.getppid() != parent:
        end_server(int(PARENT_DIED), None)
    while True:
        signal.pause()


def main() -> None:
    parent, cgroup, keeper, argv = _options(sys.argv[1:])
    if keeper and parent is not None and cgroup is not None:
        _keep(parent, cgroup)
    if not argv:
        sys.stderr.write("session_guard: usage: session_guard.py [--parent PID] -- COMMAND [ARG...]\n")
        raise SystemExit(2)
    expected_parent = parent if parent is not None else os.getppid()
    signal.signal(PARENT_DIED, _kill_everything)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(PARENT_DIED), 0, 0, 0) != 0:
        sys.stderr.write(f"session_guard: prctl failed: {os.strerror(ctypes.get_errno())}\n")
    if os.getppid() != expected_parent:
        # The server died before the signal was armed (perhaps before this interpreter had even
        # started): nothing may start.
        _kill_everything(int(PARENT_DIED), None)
        raise SystemExit(125)
    guard = os.getpid()
    agent = os.fork()
    if agent == 0:
        signal.signal(PARENT_DIED, signal.SIG_DFL)
        # Should the guard itself die, the agent dies with it (the setting survives exec).
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != guard:
            os._exit(125)  # the guard died first: adopted by init or by the server, a subreaper
        try:
            os.execv(argv[0], argv)
        except OSError as exc:
            sys.stderr.write(f"session_guard: could not start {argv[0]!r}: {exc.strerror}\n")
        os._exit(127)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent, signum)

    for forwarded in FORWARDED:
        signal.signal(forwarded, forward)
    while True:
        try:
            _, status = os.waitpid(agent, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        received = os.WTERMSIG(status)
        signal.signal(received, signal.SIG_DFL)
        os.kill(os.getpid(), received)
    raise SystemExit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
