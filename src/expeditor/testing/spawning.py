"""The agent side of the ``spawn`` step: start sleeper children, log their final pids, optionally wait.

Children are real processes that keep the agent's environment (``EXPEDITOR_SESSION_ID`` included, which
is how a supervisor can still find a double-forked daemon) and, unless told otherwise, the agent's
stdout and stderr: a forgotten dev server holding the agent's pipe open is exactly what a runner must
survive.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from expeditor.testing.channels import InvocationLog
from expeditor.testing.scenario import Spawn

__all__ = ["Child", "spawn", "wait_for"]

_SLEEPER = str(Path(__file__).with_name("sleeper.py"))


@dataclass(frozen=True)
class Child:
    """A spawned pid; ``process`` is set when the agent is its parent (not for a reparented daemon)."""

    pid: int
    process: subprocess.Popen[bytes] | None


def _read_pid(fd: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise RuntimeError("a spawned child did not report its pid in time")
        chunk = os.read(fd, 64)
        if not chunk:
            raise RuntimeError("a spawned child exited before reporting its pid")
        data += chunk
    return int(data)


def _start_one(options: Spawn) -> Child:
    argv = [sys.executable, "-I", "-S", _SLEEPER, "--sleep", str(options.sleep)]
    flags = {
        "--setsid": options.setsid,
        "--double-fork": options.double_fork,
        "--clean-env": options.clean_env,
        "--ignore-sigterm": options.ignore_sigterm,
        "--burn-cpu": options.burn_cpu,
    }
    argv += [flag for flag, on in flags.items() if on]
    read_fd, write_fd = os.pipe()
    stdio = subprocess.DEVNULL if options.close_stdio else None
    try:
        process = subprocess.Popen(
            [*argv, "--report-fd", str(write_fd)],
            stdin=subprocess.DEVNULL,
            stdout=stdio,
            stderr=stdio,
            pass_fds=(write_fd,),
        )
        os.close(write_fd)
        write_fd = -1
        pid = _read_pid(read_fd, timeout=10.0)
    finally:
        os.close(read_fd)
        if write_fd != -1:
            os.close(write_fd)
    if options.double_fork or options.clean_env:
        process.wait()  # reap the middle process: the daemon is now reparented away from us
        return Child(pid, None)
    return Child(pid, process)


def spawn(options: Spawn, log: InvocationLog) -> list[Child]:
    """Start ``options.count`` children, logging each as ``spawned`` once it is in its final state.

    ``setsid`` in the log says whether the logged process called setsid (a double-forked daemon does).
    """
    children: list[Child] = []
    for _ in range(options.count):
        child = _start_one(options)
        log.write(
            "spawned",
            pid=child.pid,
            parent=os.getpid(),
            setsid=options.setsid or options.double_fork or options.clean_env,
            double_fork=options.double_fork,
        )
        children.append(child)
    return children


def _alive(pid: int) -> bool:
    """Whether a pid we are not the parent of still runs (a zombie waiting for its reaper does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(children: list[Child], poll: float = 0.05) -> None:
    """Block until every child has ended: our own by ``wait``, reparented daemons by polling."""
    for child in children:
        if child.process is not None:
            child.process.wait()
        else:
            while _alive(child.pid):
                time.sleep(poll)
