"""Fixtures every test shares: the anyio backend, and a guard that no test leaves a process behind."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator

import psutil
import pytest

# The PostgreSQL fixtures (postgres_server, pg_database_url) and the queue's (queue_database_url, queue_hosts),
# for every test directory.
pytest_plugins = ["tests.support.postgres", "tests.support.queue_hosts"]

# Every process a test starts inherits this tag, so the leak guard can find what escaped. Under pytest-xdist
# each worker tags its own (the run's tag and the worker's id): another worker's processes are not its leftovers.
TEST_TAG_VARIABLE = "EXPEDITOR_TEST_TAG"
os.environ.setdefault(TEST_TAG_VARIABLE, uuid.uuid4().hex)
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER and not os.environ[TEST_TAG_VARIABLE].endswith(f"-{_WORKER}"):
    os.environ[TEST_TAG_VARIABLE] += f"-{_WORKER}"

# Set before any test (or a process it starts) resolves a default home, so that no test ever writes
# into the real ~/.local/state: this run's per-user state lives in a directory of its own.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="expeditor-test-state-")
atexit.register(shutil.rmtree, os.environ["XDG_STATE_HOME"], ignore_errors=True)


# The suite mostly waits (process start-ups, real CLI sessions, deliberate timeouts), so more workers than
# cores pay: measured on 2 cores, see the README. `-n N` chooses otherwise, `-n 0` or `-p no:xdist` runs serially.
DEFAULT_WORKERS = 4


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Run on ``DEFAULT_WORKERS`` pytest-xdist workers, handed one test at a time, unless the command line says.

    Not in ``addopts``: there ``-n`` would make ``-p no:xdist`` (and pytest without the plugin) a usage error.
    One test at a time: xdist's default hands out long runs of consecutive tests, which put the real-CLI
    tests (the longest, next to each other) on one worker, one after the other.
    """
    options = config.option
    if hasattr(config, "workerinput") or not config.pluginmanager.hasplugin("xdist"):
        return
    if options.numprocesses is None and not options.usepdb and not options.collectonly:
        options.numprocesses = DEFAULT_WORKERS
    if options.numprocesses and options.dist in ("no", "load") and options.maxschedchunk is None:
        options.maxschedchunk = 1


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


_SESSION_START = time.time()


def tagged_processes() -> list[psutil.Process]:
    """Live processes (other than this one) that carry this test run's tag.

    Only processes of this user started after the test run began can carry it, so only
    their environments are read: that keeps the check to a few milliseconds per test.
    """
    tag = os.environ[TEST_TAG_VARIABLE]
    me = os.getpid()
    uid = os.getuid()
    found: list[psutil.Process] = []
    for process in psutil.process_iter(["uids", "create_time"]):
        uids, created = process.info.get("uids"), process.info.get("create_time")
        if process.pid == me or uids is None or uids.real != uid or created is None or created < _SESSION_START - 1:
            continue
        try:
            if process.environ().get(TEST_TAG_VARIABLE) == tag and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.fixture(autouse=True)
def no_process_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves any tagged process alive, after killing what it left."""
    yield
    if request.node.get_closest_marker("allow_leftovers"):
        return
    leftovers = tagged_processes()
    if not leftovers:
        return
    described = []
    for process in leftovers:
        try:
            described.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
            process.send_signal(signal.SIGKILL)
        except psutil.Error:
            continue
    psutil.wait_procs(leftovers, timeout=3)
    if described:
        pytest.fail("the test left processes alive:\n" + "\n".join(described))
