"""A process is named by its pid and its start: in ticks since boot where a clock step must not matter."""

from __future__ import annotations

import os
import subprocess
import sys

from expeditor.process_identity import boot_ticks, same_boot_ticks


def test_this_process_is_named_by_its_start_in_ticks_since_boot() -> None:
    ticks = boot_ticks(os.getpid())
    assert ticks is not None
    assert ticks > 0
    assert same_boot_ticks(os.getpid(), float(ticks))
    assert not same_boot_ticks(os.getpid(), float(ticks + 1))


def test_a_process_that_has_gone_is_not_alive_under_its_old_name() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ticks = boot_ticks(child.pid)
    child.wait()
    assert ticks is not None
    assert boot_ticks(child.pid) is None
    assert not same_boot_ticks(child.pid, float(ticks))
