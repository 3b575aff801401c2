"""The session guard: a tiny process between the server and each agent, so no agent outlives its server.

The server may be SIGKILLed (Claude Code does that 500 ms after asking it to stop), and a managed
agent lives in its own process group, so the kernel would leave it running. The guard is started
as ``python -I -S session_guard.py --parent PID [--cgroup DIR] -- AGENT_ARGV...`` (standard library
only, ~20 ms), leads the agent's process group, asks Linux for SIGUSR1 when its parent dies
(``PR_SET_PDEATHSIG``), starts the agent as its child and waits for it.

``--parent`` is the server's pid as the server knows it: the guard compares it with ``getppid()``
once the signal is armed, so a server that died while the guard's interpreter was starting (the
guard would then arm the signal against init or a subreaper) starts nothing. With ``--cgroup`` the
guard joins the session's control group before the agent exists, so the agent and every descendant
are born inside it, whatever they do to their session, group, parent or environment.

When the parent dies it kills the session's control group (``cgroup.kill``) when it has one; else
it SIGKILLs every process carrying the session's ``EXPEDITOR_SESSION_ID`` (escapees that left the
group), then its whole process group. With ``--keeper --parent PID --cgroup SERVER_GROUP`` it is
instead the server's one keeper (see ``_keep``).
Otherwise it is invisible: a signal sent to it alone is passed on to the agent, and it exits
exactly as the agent did. Other systems have no parent-death signal; there the agent is started
directly and the next server start reaps what a killed server left (the live-session registry).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

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


_cgroup: str | None = None


def _kill_cgroup(group: str) -> bool:
    try:
        with open(os.path.join(group, "cgroup.kill"), "w") as stream:
            stream.write("1")
    except OSError:
        return False
    return True


def _kill_everything(_signum: int, _frame: object) -> None:
    """The server is gone: kill the session's control group, or its escapees and process group."""
    if _cgroup is not None and _kill_cgroup(_cgroup):
        os._exit(0)  # a guard was in the group and dies anyway; a keeper is outside it and is done
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


def _keep(parent: int, server_group: str) -> None:
    """The keeper: one per server, outside its process group and its cgroup; kills every session group of
    the server (``cgroup.kill`` of the server's group) when the server dies. A guard covers its session
    only while its agent runs; what the agent left behind when it exited is covered by this."""
    global _cgroup
    _cgroup = server_group
    signal.signal(PARENT_DIED, _kill_everything)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(PARENT_DIED), 0, 0, 0)
    if os.getppid() != parent:
        _kill_everything(int(PARENT_DIED), None)
        raise SystemExit(125)
    while True:
        signal.pause()


def main() -> None:
    global _cgroup
    parent, cgroup, keeper, argv = _options(sys.argv[1:])
    if keeper and parent is not None and cgroup is not None:
        _keep(parent, cgroup)
    if not argv:
        sys.stderr.write("session_guard: usage: session_guard.py [--parent PID] [--cgroup DIR] -- COMMAND [ARG...]\n")
        raise SystemExit(2)
    if cgroup is not None:
        try:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as stream:
                stream.write("0")
        except OSError as exc:
            sys.stderr.write(f"session_guard: could not join the session's control group {cgroup}: {exc.strerror}\n")
            raise SystemExit(126) from None
        _cgroup = cgroup
    expected_parent = parent if parent is not None else os.getppid()
    signal.signal(PARENT_DIED, _kill_everything)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(PARENT_DIED), 0, 0, 0) != 0:
        sys.stderr.write(f"session_guard: prctl failed: {os.strerror(ctypes.get_errno())}\n")
    if os.getppid() != expected_parent:
        # The server died before the signal was armed (perhaps before this interpreter had even
        # started): nothing may start, and whatever is already in the group goes with us.
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
