"""Containment: nothing a session starts outlives it, not even a daemon that left every trace behind.

The hardest shape is a daemon that double-forks, calls setsid and execs with a clean environment:
it is in neither the agent's process group nor its tree, and carries no session tag. Only the
session's cgroup still holds it. These tests need a writable cgroup v2 group (root here); they skip
saying so elsewhere, and fail instead under CI, which runs as root on this machine kind.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from expeditor.executor import Termination, cgroups, choose_containment
from expeditor.executor.spawning import joining
from expeditor.runs import CallerContext, open_runtime
from expeditor.testing import read_invocation_log
from tests.support.fake import fake_settings, scenario_request

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
DAEMON = {"spawn": {"sleep": 60, "clean_env": True, "close_stdio": True}}
DONE = [{"assistant": "done"}, {"result": {}}]


def cgroups_usable() -> bool:
    containment = choose_containment("auto")
    containment.close()
    return containment.kind == "cgroup"


needs_cgroups = pytest.mark.skipif(
    not cgroups_usable() and os.environ.get("CI") != "true",
    reason="no writable cgroup v2 group here (it needs root or a delegated sub-tree)",
)


def daemons(log: Path) -> list[int]:
    return [entry["pid"] for entry in read_invocation_log(log) if entry["event"] == "spawned"] if log.exists() else []


def launched(log: Path) -> list[int]:
    return [entry["pid"] for entry in read_invocation_log(log) if entry["event"] == "launch"] if log.exists() else []


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_quietly(pids: list[int]) -> None:
    """The conftest leak guard cannot see a clean-environment daemon: a test kills what it left itself."""
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            continue


def expeditor_groups() -> list[Path]:
    parent = cgroups.own_group()
    found = parent.glob(f"{cgroups.SERVER_GROUP_PREFIX}*") if parent is not None else ()
    return sorted(group for group in found if cgroups.parse_server_group_name(group.name) is not None)


@needs_cgroups
@pytest.mark.parametrize(
    ("ending", "steps", "settings"),
    [
        ("stale", [DAEMON, {"hang": True}], {"stale_threshold": 0.5}),
        ("completed", [DAEMON, *DONE], {}),
        ("cancelled", [DAEMON, {"hang": True}], {}),
    ],
)
async def test_a_clean_environment_daemon_dies_with_its_session(
    tmp_path: Path, ending: str, steps: list[dict[str, Any]], settings: dict[str, Any]
) -> None:
    log = tmp_path / "agent.log"
    request = scenario_request(tmp_path, {"steps": steps}, env={"EXPEDITOR_FAKE_LOG": str(log)})
    async with open_runtime(fake_settings(tmp_path, **settings)) as runtime, anyio.create_task_group() as group:
        handle = runtime.supervisor.start(group, request, CallerContext(None, None))
        if ending == "cancelled":
            with anyio.fail_after(10):
                while not daemons(log):
                    await anyio.sleep(0.02)
            handle.cancel("the test cancels it", grace=0.05)
        with anyio.fail_after(20):
            result = await handle.result()
        spawned = daemons(log)
        try:
            assert len(spawned) == 1
            assert result.containment == "cgroup"
            assert (
                result.termination
                is {
                    "stale": Termination.STALE,
                    "completed": Termination.COMPLETED,
                    "cancelled": Termination.CANCELLED,
                }[ending]
            )
            assert spawned[0] in {k.pid for k in result.killed}
            assert not alive(spawned[0])
        finally:
            kill_quietly(spawned)


async def test_the_tree_fallback_says_so_in_the_result(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    request = scenario_request(tmp_path, {"steps": [DAEMON, *DONE]}, env={"EXPEDITOR_FAKE_LOG": str(log)})
    async with open_runtime(fake_settings(tmp_path, containment="tree")) as runtime:
        result = await runtime.supervisor.run(request, CallerContext(None, None))
    kill_quietly(daemons(log))  # the shape the README says can escape the tree
    assert result.success
    assert result.containment == "tree"


def launching_server(
    tmp_path: Path, steps: list[dict[str, Any]], settings: dict[str, Any] | None = None, containment: str = "auto"
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"), "PYTHONPATH": str(REPO)}
    scenario = json.dumps({"steps": steps})
    argv = [sys.executable, "-m", "tests.support.launching_server", str(tmp_path), scenario]
    return subprocess.Popen(
        [*argv, containment, json.dumps(settings or {})],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


@needs_cgroups
@pytest.mark.parametrize("kill", ["the server", "its process group"])
async def test_a_server_killed_mid_run_leaves_nothing_and_the_next_start_removes_its_groups(
    tmp_path: Path, kill: str
) -> None:
    server = launching_server(tmp_path, [DAEMON, {"hang": True}])
    log = tmp_path / "agent.log"
    try:
        with anyio.fail_after(20):
            while not daemons(log):
                await anyio.sleep(0.02)
        (daemon,) = daemons(log)
        agents = launched(log)
        if kill == "the server":
            server.kill()
        else:
            os.killpg(server.pid, signal.SIGKILL)  # as a process manager stops a stdio server
        server.wait()
        with anyio.fail_after(2):
            while alive(daemon) or any(alive(pid) for pid in agents):
                await anyio.sleep(0.01)
        async with open_runtime(fake_settings(tmp_path)):
            pass  # its start reaps what the dead server left
        owners = [cgroups.parse_server_group_name(group.name) for group in expeditor_groups()]
        assert not [owner for owner in owners if owner is not None and owner[0] == server.pid]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        kill_quietly(daemons(log))


def guard_of(server_pid: int, *, keeper: bool = False) -> psutil.Process | None:
    """The server's session guard (or its keeper), once it exists; its other children may be exiting."""
    for child in psutil.Process(server_pid).children():
        try:
            argv = child.cmdline()
        except psutil.Error:
            continue
        if any("session_guard.py" in part for part in argv) and ("--keeper" in argv) is keeper:
            return child
    return None


@needs_cgroups
async def test_what_an_exited_agent_left_dies_with_its_killed_server(tmp_path: Path) -> None:
    # The agent reports its result and exits, leaving a daemon that ignores SIGTERM: the guard exits with the
    # agent, and the runner waits out its kill grace. A server SIGKILLed then leaves only its keeper to act.
    stubborn = {"spawn": {"sleep": 60, "clean_env": True, "ignore_sigterm": True, "close_stdio": True}}
    server = launching_server(tmp_path, [stubborn, *DONE], {"kill_grace": 30})
    log = tmp_path / "agent.log"
    try:
        with anyio.fail_after(20):
            while not daemons(log) or any(alive(pid) for pid in launched(log)):
                await anyio.sleep(0.02)
        (daemon,) = daemons(log)
        assert alive(daemon)  # the runner is waiting out the kill grace
        server.kill()
        server.wait()
        with anyio.fail_after(2):
            while alive(daemon):
                await anyio.sleep(0.01)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        kill_quietly(daemons(log))


async def test_a_server_killed_while_the_guard_starts_starts_no_agent(tmp_path: Path) -> None:
    # The process-tree containment's guard: it learns the server's pid from its argv, not from getppid().
    server = launching_server(tmp_path, [DAEMON, {"hang": True}], containment="tree")
    log = tmp_path / "agent.log"
    guard: psutil.Process | None = None
    try:
        with anyio.fail_after(20):
            while guard is None:
                guard = guard_of(server.pid)
                await anyio.sleep(0.001)
        guard.suspend()
        server.kill()
        server.wait()
        guard.resume()
        with anyio.fail_after(2):
            while alive(guard.pid):
                await anyio.sleep(0.01)
        assert not any(alive(pid) for pid in launched(log) + daemons(log))
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        kill_quietly(daemons(log))


def server_group_of(server_pid: int) -> Path | None:
    for group in expeditor_groups():
        owner = cgroups.parse_server_group_name(group.name)
        if owner is not None and owner[0] == server_pid:
            return group
    return None


def started_stopped(argv: list[str]) -> subprocess.Popen[bytes]:
    """``argv`` started as a child that stops itself before it execs ``argv`` (SIGCONT lets it go on)."""
    return subprocess.Popen(
        ["/bin/sh", "-c", 'kill -STOP $$; exec "$@"', "stopped", *argv],
        env={},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@needs_cgroups
async def test_a_launch_that_had_not_joined_its_group_when_the_server_died_never_starts(tmp_path: Path) -> None:
    # A launch's first process joins its session's group, then execs the agent. Here one is stopped
    # before it joins (as a server killed mid-spawn would leave it), the server is SIGKILLed, and the
    # process is let go once the keeper has ended the server's groups: with its group gone, the agent
    # never runs. (Caught by polling the process table, the ~1 ms window is too short to hit reliably.)
    server = launching_server(tmp_path, [{"hang": True}])
    log = tmp_path / "agent.log"
    trace = tmp_path / "the late agent ran"
    late: subprocess.Popen[bytes] | None = None
    try:
        with anyio.fail_after(20):
            while not launched(log) or (group := server_group_of(server.pid)) is None:
                await anyio.sleep(0.02)
        session_group = cgroups.create_session_group(group, "late-launch")
        keeper = guard_of(server.pid, keeper=True)
        assert keeper is not None
        late = started_stopped(joining(["/usr/bin/touch", str(trace)], session_group, {}))
        with anyio.fail_after(5):
            while psutil.Process(late.pid).status() != psutil.STATUS_STOPPED:
                await anyio.sleep(0.001)
        server.kill()
        server.wait()
        with anyio.fail_after(5):
            while alive(keeper.pid):
                await anyio.sleep(0.01)
        assert not group.exists()
        late.send_signal(signal.SIGCONT)
        _, complaint = late.communicate(timeout=5)
        assert late.returncode == 126
        assert b"cgroup.procs" in complaint
        assert not trace.exists()
        assert not any(alive(pid) for pid in launched(log))
    finally:
        if late is not None and late.poll() is None:
            late.kill()
            late.communicate()
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.mark.parametrize("containment", ["cgroup", "tree"])
async def test_a_session_whose_registry_entry_cannot_be_written_is_killed_at_once(
    tmp_path: Path, containment: str
) -> None:
    if containment == "cgroup" and not cgroups_usable() and os.environ.get("CI") != "true":
        pytest.skip("no writable cgroup v2 group here (it needs root or a delegated sub-tree)")
    settings = fake_settings(tmp_path, containment=containment)
    settings.home.mkdir(parents=True)
    settings.sessions_dir.write_text("a file where the registry directory should be")
    log = tmp_path / "agent.log"
    request = scenario_request(tmp_path, {"steps": [{"hang": True}]}, env={"EXPEDITOR_FAKE_LOG": str(log)})
    async with open_runtime(settings) as runtime:
        with anyio.fail_after(10):
            result = await runtime.supervisor.run(request, CallerContext(None, None))
        record = runtime.store.get_run(result.session_id)
    assert result.termination is Termination.LAUNCH_FAILED
    assert "registry entry could not be written" in result.reason
    assert str(settings.sessions_dir) in result.reason
    assert record is not None
    assert record.termination is Termination.LAUNCH_FAILED
    assert not any(alive(pid) for pid in launched(log))


def _mount_small_tmpfs(where: Path) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], capture_output=True, check=False
    )
    return mounted.returncode == 0


def _unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def _fill(directory: Path) -> None:
    """Write until the file system is full (ENOSPC)."""
    descriptor = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(descriptor, b"\0" * 4096)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(descriptor)


@pytest.mark.parametrize("containment", ["cgroup", "tree"])
async def test_a_full_registry_file_system_ends_no_supervision(
    tmp_path: Path, containment: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The registry's heartbeat rewrites fail with ENOSPC while the session runs: logged once, and the session
    # is still judged, killed at its threshold and recorded.
    if containment == "cgroup" and not cgroups_usable() and os.environ.get("CI") != "true":
        pytest.skip("no writable cgroup v2 group here (it needs root or a delegated sub-tree)")
    settings = fake_settings(tmp_path, containment=containment, stale_threshold=1.5, idle_timeout=1.5)
    if not _mount_small_tmpfs(settings.sessions_dir):
        if os.environ.get("CI") == "true":
            pytest.fail("mounting a tmpfs needs root, which CI has")
        pytest.skip("mounting a small tmpfs as the registry directory needs root")
    try:
        steps = [{"assistant": "one"}, {"tick": {"interval": 0.3, "duration": 2.5}}, {"hang": True}]
        request = scenario_request(tmp_path, {"steps": steps})
        async with open_runtime(settings) as runtime, anyio.create_task_group() as group:
            handle = runtime.supervisor.start(group, request, CallerContext(None, None))
            with anyio.fail_after(10):
                while not list(settings.sessions_dir.glob("*.json")):
                    await anyio.sleep(0.01)
            _fill(settings.sessions_dir)
            with anyio.fail_after(20):
                result = await handle.result()
            record = runtime.store.get_run(result.session_id)
        assert result.termination is Termination.STALE
        assert record is not None
        assert record.termination is Termination.STALE
        failures = [r for r in caplog.records if "registry entry could not be updated" in r.getMessage()]
        assert len(failures) == 1
        assert not [r for r in caplog.records if r.exc_info is not None]
    finally:
        _unmount(settings.sessions_dir)
