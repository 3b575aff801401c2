"""Which process a pid is: a pid plus its start time names one process, even after the pid is reused.

The registry, markers and store records all name their owners this way; this is the one place
that asks the operating system.
"""

from __future__ import annotations

import psutil

__all__ = ["process_alive", "process_start_time"]


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
