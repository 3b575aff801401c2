"""A server stopped the way Claude Code stops it leaves no session process and no marker behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from mcp import Client, StdioServerParameters

from expeditor.config import load_settings
from expeditor.executor import RunRequest, Termination
from expeditor.runs import Supervisor, build_executor
from expeditor.runs import records as records_module
from expeditor.runs.caller import CallerContext
from expeditor.server.app import build_server
from expeditor.state import RunStatus, SqliteCampaignStore
from expeditor.testing import read_invocation_log
from tests.support.fake import fake_settings

pytestmark = pytest.mark.anyio


def serve_parameters(tmp_path: Path, scenario: Mapping[str, Any]) -> StdioServerParameters:
    env = {
        **os.environ,
        "EXPEDITOR_HOME": str(tmp_path / "home"),
        "EXPEDITOR_CLAUDE_COMMAND": f"{sys.executable} -m expeditor.testing.fake_agent",
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
        "EXPEDITOR_FAKE_SCENARIO": json.dumps(scenario),
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
        "CLAUDE_CODE_SESSION_ID": str(uuid.uuid4()),
    }
    return StdioServerParameters(command=sys.executable, args=["-m", "expeditor", "serve"], env=env)


def server_process() -> psutil.Process:
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.cmdline()[-2:] == ["expeditor", "serve"]:
                return child
    raise AssertionError("no expeditor serve process found")


async def wait_for_registry(home: Path, count: int) -> None:
    with anyio.fail_after(15):
        while len(list((home / "sessions").glob("*.json"))) < count:
            await anyio.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def test_sigint_then_sigterm_mid_run_skill_kills_every_session_and_removes_markers(tmp_path: Path) -> None:
    sessions = 3
    scenario = {"steps": [{"spawn": {"sleep": 60, "setsid": True}}, {"hang": True}]}
    home = tmp_path / "home"
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(Client(serve_parameters(tmp_path, scenario)))
        group = await stack.enter_async_context(anyio.create_task_group())
        for _ in range(sessions):
            group.start_soon(_call_ignoring_disconnect, client, str(tmp_path))
        await wait_for_registry(home, sessions)
        with anyio.fail_after(10):
            while len(read_invocation_log(tmp_path / "agent.log")) < 2 * sessions:  # every launch and its child logged
                await anyio.sleep(0.05)
        server = server_process()
        assert list((home / "markers").glob("*.marker"))
        # Claude Code's sequence: SIGINT, SIGTERM 100 ms later, SIGKILL about 400 ms after that.
        server.send_signal(signal.SIGINT)
        await anyio.sleep(0.1)
        with contextlib.suppress(psutil.Error):
            server.send_signal(signal.SIGTERM)
        await anyio.sleep(0.4)
        with contextlib.suppress(psutil.Error):
            server.kill()
        group.cancel_scope.cancel()
    pids = [
        entry["pid"] for entry in read_invocation_log(tmp_path / "agent.log") if entry["event"] in ("launch", "spawned")
    ]
    assert len(pids) == 2 * sessions
    assert [pid for pid in pids if alive(pid)] == []
    assert list((home / "markers").glob("*.marker")) == []
    assert list((home / "sessions").glob("*.json")) == []
    log = (home / "logs" / "expeditor.log").read_text()
    stopped = re.search(r"received SIGINT: stopped (\d+) sessions in (\d+) ms", log)
    assert stopped is not None, log[-2000:]
    assert int(stopped.group(1)) == sessions
    assert int(stopped.group(2)) < 100


async def _call_ignoring_disconnect(client: Client, cwd: str) -> None:
    with contextlib.suppress(Exception):
        await client.call_tool("run_skill", {"skill_command": "/hang", "cwd": cwd})


async def test_a_sigkilled_server_leaves_no_session_process(tmp_path: Path) -> None:
    scenario = {"steps": [{"spawn": {"sleep": 60}}, {"spawn": {"sleep": 60, "double_fork": True}}, {"hang": True}]}
    home = tmp_path / "home"
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(Client(serve_parameters(tmp_path, scenario)))
        group = await stack.enter_async_context(anyio.create_task_group())
        group.start_soon(_call_ignoring_disconnect, client, str(tmp_path))
        await wait_for_registry(home, 1)
        with anyio.fail_after(10):
            while len(read_invocation_log(tmp_path / "agent.log")) < 3:  # the launch and both children
                await anyio.sleep(0.05)
        server_process().kill()
        pids = [
            entry["pid"]
            for entry in read_invocation_log(tmp_path / "agent.log")
            if entry["event"] in ("launch", "spawned")
        ]
        with anyio.fail_after(5):
            while [pid for pid in pids if alive(pid)]:
                await anyio.sleep(0.05)
        group.cancel_scope.cancel()


async def test_the_next_server_marks_the_runs_of_a_sigkilled_server_interrupted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(Client(serve_parameters(tmp_path, {"steps": [{"hang": True}]})))
        group = await stack.enter_async_context(anyio.create_task_group())
        group.start_soon(_call_ignoring_disconnect, client, str(tmp_path))
        await wait_for_registry(home, 1)
        (entry,) = (home / "sessions").glob("*.json")
        session_id = entry.stem
        server_process().kill()
        group.cancel_scope.cancel()
    settings = load_settings(home=home, claude_config_dir=tmp_path / "claude", allowed_roots=(tmp_path,))
    async with Client(build_server(settings, env=dict(os.environ))) as client:
        listed = await client.call_tool("list_sessions", {})
    assert (listed.structured_content or {}).get("sessions") == []
    assert list((home / "sessions").glob("*.json")) == []
    store = SqliteCampaignStore(home / "state.sqlite3")
    try:
        run = store.get_run(session_id)
        assert run is not None
        assert run.status is RunStatus.INTERRUPTED
    finally:
        store.close()


async def test_the_server_adopts_and_reaps_orphans_so_no_zombie_lingers(tmp_path: Path) -> None:
    scenario = {"steps": [{"spawn": {"sleep": 60, "double_fork": True, "close_stdio": True}}, {"result": "done"}]}
    parameters = serve_parameters(tmp_path, scenario)
    assert parameters.env is not None
    parameters.env["EXPEDITOR_CHILDREN_INTERVAL"] = "0.2"
    async with Client(parameters) as client:
        result = await client.call_tool("run_skill", {"skill_command": "/leaves-a-daemon", "cwd": str(tmp_path)})
        assert result.structured_content is not None
        (daemon,) = [e["pid"] for e in read_invocation_log(tmp_path / "agent.log") if e["event"] == "spawned"]
        assert daemon in [killed["pid"] for killed in result.structured_content["killed"]]
        server = server_process()
        with anyio.fail_after(5):
            # Adopted by the server (a subreaper), killed, then reaped: no /proc entry, not even a zombie.
            while os.path.exists(f"/proc/{daemon}") or any(
                child.status() == psutil.STATUS_ZOMBIE for child in server.children()
            ):
                await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_a_shutdown_does_not_wait_for_a_slow_first_git_snapshot_nor_start_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow_snapshot(cwd: Path, cache: Path, excluded: object = ()) -> None:
        time.sleep(3)  # a cold cache in a large repository

    monkeypatch.setattr(records_module, "worktree_state", slow_snapshot)
    monkeypatch.setenv("EXPEDITOR_FAKE_LOG", str(tmp_path / "agent.log"))
    settings = fake_settings(tmp_path)
    store = SqliteCampaignStore(settings.state_path)
    try:
        supervisor = Supervisor(settings, build_executor(settings), store=store)
        results = []

        async def run() -> None:
            results.append(await supervisor.run(RunRequest(prompt="/x", cwd=tmp_path), CallerContext(None, None)))

        async with anyio.create_task_group() as group:
            group.start_soon(run)
            with anyio.fail_after(5):
                while not supervisor.live:
                    await anyio.sleep(0.01)
            started = anyio.current_time()
            await supervisor.shut_down("the test stopped the server")
            elapsed = anyio.current_time() - started
        (result,) = results
        assert result.termination is Termination.CANCELLED
        assert elapsed < 0.5
        assert not (tmp_path / "agent.log").exists()  # nothing was started
        (record,) = store.list_runs()
        assert record.status is RunStatus.CANCELLED
    finally:
        store.close()
