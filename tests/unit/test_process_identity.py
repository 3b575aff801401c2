"""A process is named by its pid and its start: in ticks since boot where a clock step must not matter.
Whether it is an expeditor process is read from its command line (this very process always is)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from expeditor.process_identity import boot_ticks, command_runs_expeditor, runs_expeditor, same_boot_ticks


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


@pytest.mark.parametrize(
    "argv",
    [
        ["expeditor", "serve"],
        ["/home/me/.local/bin/expeditor", "marker", "hold"],
        ["/venv/bin/python", "/venv/bin/expeditor", "serve"],
        ["/usr/bin/python3.11", "-I", "/venv/bin/expeditor", "recipe", "run", "x"],
        ["/venv/bin/python", "-m", "expeditor", "serve"],
        ["python3", "-m", "expeditor.testing.fake_agent"],
        ["python", "-Im", "expeditor"],
        ["python", "-mexpeditor.testing.fake_agent"],
        ["python", "-X", "dev", "-m", "expeditor", "serve"],
        ["platform-python", "-m", "expeditor"],
    ],
)
def test_command_lines_that_run_expeditor_are_recognised(argv: list[str]) -> None:
    assert command_runs_expeditor(argv)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["/sbin/init"],
        ["sleep", "60"],
        ["python", "-m", "pytest"],
        ["python", "-m", "expeditorx"],
        ["python", "-c", "import sys", "-m", "expeditor"],
        ["python", "forge.py", "-m", "expeditor"],
        ["sleep", "-m", "expeditor"],
        ["less", "expeditor"],
        ["bash", "-c", "expeditor marker hold"],
        ["python", "/tmp/expeditor.py"],
    ],
)
def test_command_lines_that_merely_mention_expeditor_are_not(argv: list[str]) -> None:
    assert not command_runs_expeditor(argv)


def test_this_process_is_an_expeditor_process_whatever_its_command_line() -> None:
    assert runs_expeditor(os.getpid())


def test_pid_1_and_unrelated_processes_are_not_expeditor_processes() -> None:
    if os.getpid() != 1:
        assert not runs_expeditor(1)
    unrelated = subprocess.Popen(["sleep", "60"])
    try:
        assert not runs_expeditor(unrelated.pid)
    finally:
        unrelated.kill()
        unrelated.wait()


def test_a_live_process_running_an_expeditor_module_is_an_expeditor_process() -> None:
    read_end, write_end = os.pipe()
    argv = [sys.executable, "-m", "expeditor.testing.sleeper", "--sleep", "60", "--report-fd", str(write_end)]
    child = subprocess.Popen(argv, pass_fds=(write_end,))
    os.close(write_end)
    try:
        with os.fdopen(read_end) as reported:
            assert int(reported.readline()) == child.pid  # the sleeper is up: its command line is final
        assert runs_expeditor(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not runs_expeditor(child.pid)
