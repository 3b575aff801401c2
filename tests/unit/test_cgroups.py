"""The cgroup v2 primitives against the kernel's real control groups, with real processes.

Every test works under its own group ``<own group>/expeditor-test-<uuid>``, which the fixture kills
and removes afterwards even when the test failed. They need a writable cgroup v2 group with
``cgroup.kill`` (root here); elsewhere they skip saying why, and under ``CI=true`` (root on this
machine kind) they fail instead. Waits are bounded reads of kernel files or pipes, never sleeps.
"""

from __future__ import annotations

import errno
import math
import os
import random
import selectors
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from expeditor.executor import cgroups
from expeditor.process_identity import process_alive, process_start_time

SLEEPER = ["sleep", "60"]

# Waits for "go" on stdin (so the test can move it into a group first), then double-forks: the
# middle process calls setsid and exits, the grandchild reports its pid and sleeps, the first exits.
DOUBLE_FORK_DAEMON = """
import os, sys, time
sys.stdin.readline()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(1, b"%d\\n" % os.getpid())
        time.sleep(60)
    os._exit(0)
os.wait()
"""

# Waits for "go" on stdin, then burns 0.2 s of CPU and exits.
CPU_BURNER = """
import sys, time
sys.stdin.readline()
while time.process_time() < 0.2:
    pass
"""


def _unusable_reason() -> str | None:
    """Why this machine gives these tests no cgroup v2 group to work in, or None when it does."""
    if cgroups.v2_root() is None:
        return "no cgroup2 file system is mounted"
    own = cgroups.own_group()
    if own is None:
        return "this process's cgroup v2 group is not visible under the mount"
    if not os.access(own, os.W_OK):
        return f"this process (uid {os.geteuid()}) cannot create groups in {own}"
    return None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"cgroup tests must run under CI: {reason}")
    pytest.skip(f"cgroup v2 is not usable here: {reason}")


def _teardown(group: Path, timeout: float = 5.0) -> list[str]:
    """Kill and remove ``group`` with raw kernel writes (not the code under test); what could not be undone."""
    if not group.exists():
        return []
    (group / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + timeout
    while "populated 1" in (group / "cgroup.events").read_text() and time.monotonic() < deadline:
        time.sleep(0.001)
    problems: list[str] = []
    for directory, _, _ in sorted(os.walk(group), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(directory)
        except OSError as exc:
            problems.append(f"{directory}: {exc.strerror}")
    return problems


@pytest.fixture
def parent() -> Iterator[Path]:
    """A fresh group of this test's own, killed and removed afterwards whatever the test did."""
    reason = _unusable_reason()
    if reason is not None:
        _skip_or_fail(reason)
    own = cgroups.own_group()
    assert own is not None
    group = own / f"expeditor-test-{uuid.uuid4().hex}"
    group.mkdir()
    if not (group / "cgroup.kill").exists():
        group.rmdir()
        _skip_or_fail("the kernel has no cgroup.kill (Linux < 5.14)")
    try:
        yield group
    finally:
        problems = _teardown(group)
    assert not problems, f"the test's groups could not be removed: {problems}"


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start processes that are killed and reaped after the test, whatever became of them."""
    started: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], *, stdin: int | None = None, stdout: int | None = None) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(argv, stdin=stdin, stdout=stdout)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait(timeout=5)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


def _read_line(process: subprocess.Popen[bytes], timeout: float = 5.0) -> str:
    """One line from ``process``'s stdout, or fail after ``timeout`` seconds."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                pytest.fail(f"no line within {timeout} s (got {line!r})")
            byte = os.read(process.stdout.fileno(), 1)
            if not byte:
                pytest.fail(f"the pipe closed mid-line (got {line!r})")
            line += byte
    return line.decode()


def _go(process: subprocess.Popen[bytes]) -> None:
    assert process.stdin is not None
    process.stdin.write(b"go\n")
    process.stdin.flush()


def _dead(pid: int) -> bool:
    """Gone, or a zombie waiting for whoever reaps it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_v2_mount_and_this_process_group_are_read_from_proc() -> None:
    reason = _unusable_reason()
    if reason is not None:
        _skip_or_fail(reason)
    root = cgroups.v2_root()
    own = cgroups.own_group()
    assert root is not None
    assert own is not None
    assert (root / "cgroup.controllers").is_file()
    assert own == root or root in own.parents
    assert (own / "cgroup.procs").is_file()
    assert str(os.getpid()) in (own / "cgroup.procs").read_text().split()
    assert cgroups.own_group(os.getpid()) == own
    assert cgroups.own_group(int(Path("/proc/sys/kernel/pid_max").read_text()) + 1) is None


def test_a_server_group_name_reads_back_as_the_exact_pid_and_start_time() -> None:
    start = process_start_time(os.getpid())
    assert start is not None
    samples = [(os.getpid(), start), (1, 0.0), (4194304, 1796230835.36), (7, 1e-05)]
    samples += [(random.randint(1, 2**22), random.uniform(0, 4e9)) for _ in range(200)]
    for pid, start_time in samples:
        name = cgroups.server_group_name(pid, start_time)
        assert name.startswith(cgroups.SERVER_GROUP_PREFIX)
        assert "/" not in name
        assert cgroups.parse_server_group_name(name) == (pid, start_time)
    assert cgroups.server_group_name(5, 12) == cgroups.server_group_name(5, 12.0)


@pytest.mark.parametrize(
    "name",
    [
        "expeditor-test-0123",
        "expeditor-007-1.5",
        "expeditor-7-1_0",
        "expeditor-7- 1.5",
        "expeditor-7-inf",
        "expeditor-7-nan",
        "expeditor-0-1.5",
        "expeditor-7--1.5",
        "expeditor-7",
        "session-7-1.5",
        "expeditor-٧-1.5",
    ],
)
def test_a_name_not_written_by_server_group_name_names_no_server(name: str) -> None:
    assert cgroups.parse_server_group_name(name) is None


@pytest.mark.parametrize(("pid", "start"), [(0, 1.0), (-1, 1.0), (5, -1.0), (5, math.inf), (5, math.nan)])
def test_a_server_group_name_needs_a_positive_pid_and_a_finite_start(pid: int, start: float) -> None:
    with pytest.raises(ValueError, match="server group"):
        cgroups.server_group_name(pid, start)


def test_a_server_group_is_created_once_and_checked_usable(parent: Path) -> None:
    group = cgroups.open_server_group(parent, os.getpid(), 1.25)
    assert group == parent / f"expeditor-{os.getpid()}-1.25"
    assert (group / "cgroup.kill").is_file()
    assert cgroups.open_server_group(parent, os.getpid(), 1.25) == group
    session = cgroups.create_session_group(group, "abc_DEF-1")
    assert session == group / "session-abc_DEF-1"
    assert cgroups.create_session_group(group, "abc_DEF-1") == session


def test_a_directory_outside_cgroup_v2_is_refused_and_left_untouched(tmp_path: Path) -> None:
    with pytest.raises(cgroups.CgroupUnavailable, match="not a cgroup v2 group"):
        cgroups.open_server_group(tmp_path, os.getpid(), 1.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("session_id", ["", "..", "../x", "a/b", "a b", "é"])
def test_a_session_id_that_could_leave_the_server_group_is_refused(parent: Path, session_id: str) -> None:
    with pytest.raises(ValueError, match="session id"):
        cgroups.create_session_group(parent, session_id)


def test_a_process_moved_into_a_group_is_listed_killed_and_its_group_removed(
    parent: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    group = cgroups.create_session_group(parent, "one")
    assert not cgroups.populated(group)
    process = spawn(SLEEPER)
    cgroups.join(group, process.pid)
    assert cgroups.members(group) == [process.pid]
    assert cgroups.members(parent) == [process.pid]
    assert cgroups.populated(group)
    assert cgroups.populated(parent)
    started = time.monotonic()
    cgroups.kill(group)
    assert cgroups.wait_empty(group, timeout=1.0)
    assert time.monotonic() - started < 1.0
    assert cgroups.members(group) == []  # the killed child is a zombie until we reap it, yet not a member
    assert process.wait(timeout=1) == -9
    assert cgroups.remove(group)
    assert not group.exists()


def test_a_double_forked_setsid_daemon_stays_in_the_group_and_dies_with_it(
    parent: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    group = cgroups.create_session_group(parent, "daemon")
    launcher = spawn([sys.executable, "-c", DOUBLE_FORK_DAEMON], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    cgroups.join(group, launcher.pid)
    _go(launcher)
    daemon = int(_read_line(launcher))
    assert launcher.wait(timeout=5) == 0  # the daemon's parent and grandparent are gone
    assert os.getsid(daemon) not in (os.getsid(0), launcher.pid)  # in a session of its own, not ours
    assert psutil.Process(daemon).ppid() != launcher.pid
    assert cgroups.members(group) == [daemon]
    cgroups.kill(group)
    assert cgroups.wait_empty(group, timeout=1.0)
    assert _dead(daemon)
    assert cgroups.remove(group)


def test_a_group_still_holding_a_process_is_not_removed(
    parent: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    group = cgroups.create_session_group(parent, "busy")
    process = spawn(SLEEPER)
    cgroups.join(group, process.pid)
    assert not cgroups.remove(group)
    assert not cgroups.remove(parent)
    assert group.is_dir()
    assert process.poll() is None
    with pytest.raises(cgroups.CgroupUnavailable, match="still holds processes"):
        cgroups.create_session_group(parent, "busy")


def test_a_group_that_is_gone_reads_as_empty_and_is_fine_to_kill_and_remove(parent: Path) -> None:
    missing = parent / "session-never-made"
    assert cgroups.members(missing) == []
    assert not cgroups.populated(missing)
    assert cgroups.wait_empty(missing, timeout=0.0)
    assert cgroups.cpu_seconds(missing) is None
    cgroups.kill(missing)
    assert cgroups.remove(missing)
    assert cgroups.dead_server_groups(missing, lambda pid, start: False) == []


def test_joining_a_process_that_is_gone_raises_process_lookup_error(
    parent: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    process = spawn(["true"])
    process.wait(timeout=5)
    with pytest.raises(ProcessLookupError):
        cgroups.join(parent, process.pid)


def test_a_group_that_outlives_its_timeout_reports_not_empty(
    parent: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    process = spawn(SLEEPER)
    cgroups.join(parent, process.pid)
    started = time.monotonic()
    assert not cgroups.wait_empty(parent, timeout=0.05)
    assert 0.05 <= time.monotonic() - started < 0.5


def test_dead_server_groups_finds_a_dead_owner_but_not_this_process(parent: Path) -> None:
    me = os.getpid()
    start = process_start_time(me)
    assert start is not None
    impossible_pid = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    mine = cgroups.open_server_group(parent, me, start)
    dead = cgroups.open_server_group(parent, impossible_pid, start)
    reused_pid = cgroups.open_server_group(parent, me, start - 100.0)
    (parent / "expeditor-test-other").mkdir()
    (parent / "session-x").mkdir()
    found = cgroups.dead_server_groups(parent, process_alive)
    assert sorted(found) == sorted([dead, reused_pid])
    assert mine not in found


def test_reap_server_group_leaves_no_process_and_no_group(
    parent: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    server = cgroups.open_server_group(parent, os.getpid(), 3.5)
    processes = []
    for session_id in ("a", "b"):
        session = cgroups.create_session_group(server, session_id)
        for _ in range(2):
            process = spawn(SLEEPER)
            cgroups.join(session, process.pid)
            processes.append(process)
    assert len(cgroups.members(server)) == 4
    assert cgroups.reap_server_group(server, timeout=1.0)
    assert not server.exists()
    assert [process.wait(timeout=1) for process in processes] == [-9] * 4
    assert not [path for path in parent.iterdir() if path.is_dir()]


def test_cpu_seconds_grows_by_what_a_child_burns_in_the_group(
    parent: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    group = cgroups.create_session_group(parent, "cpu")
    before = cgroups.cpu_seconds(group)
    assert before is not None
    burner = spawn([sys.executable, "-c", CPU_BURNER], stdin=subprocess.PIPE)
    cgroups.join(group, burner.pid)
    _go(burner)
    assert burner.wait(timeout=5) == 0
    after = cgroups.cpu_seconds(group)
    assert after is not None
    assert 0.18 <= after - before < 1.0


def test_the_kernel_refuses_to_remove_a_populated_group_with_ebusy(
    parent: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """The fact ``remove`` relies on, checked directly."""
    process = spawn(SLEEPER)
    cgroups.join(parent, process.pid)
    with pytest.raises(OSError, match="busy") as raised:
        parent.rmdir()
    assert raised.value.errno == errno.EBUSY
