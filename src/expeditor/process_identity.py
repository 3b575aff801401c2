"""Which process a pid is: a pid plus its start time names one process, even after the pid is reused.

The registry, markers and store records all name their owners this way; this is the one place
that asks the operating system. psutil's start time is the boot time plus the process's age, and the
boot time is re-read from the wall clock: a clock step moves it. Where a name must outlive such a
step (a server's cgroup), ``boot_ticks`` gives the start in clock ticks since boot, which never moves.
"""

from __future__ import annotations

import psutil

__all__ = ["boot_ticks", "process_alive", "process_start_time", "same_boot_ticks"]


def process_start_time(pid: int) -> float | None:
    """The start time psutil reports for ``pid``, or None when it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def process_alive(pid: int, start_time: float) -> bool:
    """True when ``pid`` is alive and is the same process that started at ``start_time``."""
    try:
        process = psutil.Process(pid)
        return process.create_time() == start_time and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def boot_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/PID/stat`` field 22); None when gone or unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            data = stream.read()
        # The command name may hold spaces and parentheses: the fields start after the last ')'.
        return int(data[data.rfind(b")") + 2 :].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def same_boot_ticks(pid: int, ticks: float) -> bool:
    """True when ``pid`` is alive and started ``ticks`` clock ticks after boot (see ``boot_ticks``)."""
    if boot_ticks(pid) != int(ticks):
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
