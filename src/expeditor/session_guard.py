"""The session guard: a tiny process between the server and each agent, so no agent outlives its server.

The server may be SIGKILLed (Claude Code does that 500 ms after asking it to stop), and a managed
agent lives in its own process group, so the kernel would leave it running. The guard is started
as ``python -I -S session_guard.py AGENT_ARGV...`` (standard library only, ~20 ms), leads the
agent's process group, asks Linux for SIGUSR1 when its parent dies (``PR_SET_PDEATHSIG``), starts
the agent as its child and waits for it. When the parent dies it SIGKILLs every process carrying
the session's ``EXPEDITOR_SESSION_ID`` (escapees that left the group), then its whole group.
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


def _kill_everything(_signum: int, _frame: object) -> None:
    """The server is gone: kill the session's escapees, then the whole group, this guard included."""
    tag = os.environb.get(TAG_VARIABLE)
    if tag:
        for pid in _tagged_pids(tag):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def main() -> None:
    argv = sys.argv[1:]
    if not argv:
        sys.stderr.write("session_guard: usage: session_guard.py COMMAND [ARG...]\n")
        raise SystemExit(2)
    parent = os.getppid()
    signal.signal(PARENT_DIED, _kill_everything)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(PARENT_DIED), 0, 0, 0) != 0:
        sys.stderr.write(f"session_guard: prctl failed: {os.strerror(ctypes.get_errno())}\n")
    if os.getppid() != parent:
        # The server died before the signal was armed: nothing should start.
        raise SystemExit(125)
    agent = os.fork()
    if agent == 0:
        signal.signal(PARENT_DIED, signal.SIG_DFL)
        # Should the guard itself die, the agent dies with it (the setting survives exec).
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() == 1:
            os._exit(125)
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
