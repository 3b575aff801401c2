"""A child process for the fake agent's ``spawn`` step: sleeps or burns CPU, optionally escaping its parent.

Run by path with ``python -I -S sleeper.py`` (standard library only, so it starts in ~10 ms without
importing expeditor). Once set up (new session, signal disposition) it writes its pid and a newline to
``--report-fd`` and closes it: the agent logs the pid only then, so a test that reads the log knows the
child is in its final state. With ``--double-fork`` the started process forks the daemon and exits; the
daemon calls setsid and is reparented away, in neither the agent's process group nor its tree.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

__all__ = ["burn", "main"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sleeper", description=__doc__)
    parser.add_argument("--sleep", type=float, required=True, help="lifetime, seconds")
    parser.add_argument("--report-fd", type=int, required=True, help="where to write the final pid")
    parser.add_argument("--setsid", action="store_true", help="leave the parent's process group")
    parser.add_argument("--double-fork", action="store_true", help="become a reparented daemon")
    parser.add_argument(
        "--clean-env", action="store_true", help="a daemon that then execs itself with a one-variable environment"
    )
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--burn-cpu", action="store_true", help="busy-loop instead of sleeping")
    return parser.parse_args(argv)


def burn(seconds: float) -> None:
    """Keep one core busy for ``seconds``: CPU activity with no output."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(10_000))


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.double_fork or args.clean_env:
        if os.fork() > 0:
            os._exit(0)  # the middle process: gone before the agent logs anything
        os.setsid()
    if args.clean_env:
        # Drop every trace of the session from the environment, as a hostile daemon would: no tag to find.
        os.set_inheritable(args.report_fd, True)
        again = [sys.executable, "-I", "-S", __file__, "--sleep", str(args.sleep), "--report-fd", str(args.report_fd)]
        again += ["--ignore-sigterm"] if args.ignore_sigterm else []
        again += ["--burn-cpu"] if args.burn_cpu else []
        os.execve(sys.executable, again, {"PATH": "/usr/bin:/bin"})
    elif args.setsid:
        os.setsid()
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.write(args.report_fd, f"{os.getpid()}\n".encode())
    os.close(args.report_fd)
    if args.burn_cpu:
        burn(args.sleep)
    else:
        time.sleep(args.sleep)


if __name__ == "__main__":
    main()
