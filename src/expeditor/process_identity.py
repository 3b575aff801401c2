"""Which process a pid is: a pid plus its start time names one process, even after the pid is reused.

The registry, markers and store records all name their owners this way; this is the one place
that asks the operating system. psutil's start time is the boot time plus the process's age, and the
boot time is re-read from the wall clock: a clock step moves it. Where a name must outlive such a
step (a server's cgroup), ``boot_ticks`` gives the start in clock ticks since boot, which never moves.
Whether a pid is an expeditor process at all is asked here too (``runs_expeditor``): a marker vouches
only when one holds it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import psutil

__all__ = [
    "boot_ticks",
    "command_runs_expeditor",
    "process_alive",
    "process_start_time",
    "runs_expeditor",
    "same_boot_ticks",
]

_PACKAGE = "expeditor"
# An interpreter that can run expeditor: python, python3.11, platform-python, pypy3 ...
_INTERPRETER = re.compile(r"python|pypy")
# Interpreter options that take an argument (``-c`` and ``-m`` end the options and are read apart).
_SHORT_OPTIONS_WITH_ARGUMENT = frozenset("WX")
_LONG_OPTIONS_WITH_ARGUMENT = frozenset({"--check-hash-based-pycs"})


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


def command_runs_expeditor(argv: Sequence[str]) -> bool:
    """True when a command line runs expeditor: its ``expeditor`` entry point, or ``-m expeditor[.<module>]``.

    ``expeditor …`` (an installed launcher), ``<python> [options] /path/to/expeditor …`` (the console
    script run by its interpreter, as a shebang does) and ``<python> [options] -m expeditor…`` count.
    Options are read as the interpreter reads them, so a ``-m`` after the script or ``-c`` (the program's
    own argument) does not.
    """
    if not argv:
        return False
    if os.path.basename(argv[0]) == _PACKAGE:
        return True
    if not _INTERPRETER.search(os.path.basename(argv[0])):
        return False
    words = iter(argv[1:])
    for word in words:
        if word.startswith("--"):
            if word in _LONG_OPTIONS_WITH_ARGUMENT:
                next(words, None)
            continue
        if word == "-" or not word.startswith("-"):
            # The program: a script (expeditor's console script, or anything else) or standard input.
            return os.path.basename(word) == _PACKAGE
        # A cluster of short options, as in -Im expeditor or -mexpeditor.
        for index, option in enumerate(word[1:], start=1):
            if option == "c":
                return False
            if option == "m":
                return _is_expeditor_module(word[index + 1 :] or next(words, ""))
            if option in _SHORT_OPTIONS_WITH_ARGUMENT:
                if index + 1 == len(word):
                    next(words, None)
                break
    return False


def _is_expeditor_module(module: str) -> bool:
    return module == _PACKAGE or module.startswith(f"{_PACKAGE}.")


def runs_expeditor(pid: int) -> bool:
    """True when ``pid`` is an expeditor process: this very process, or one whose command line runs expeditor.

    pid 1 (init, or a container's first process) never is, unless it is this process: whoever asks is
    an expeditor process by definition. A pid that is gone, or whose command line cannot be read, is not.
    """
    if pid == os.getpid():
        return True
    if pid == 1:
        return False
    try:
        argv = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return command_runs_expeditor(argv)
