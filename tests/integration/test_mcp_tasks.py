"""run_skill and dispatch as MCP tasks, for a client that declares the extension; the blocking call for any other."""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult
from rich.console import Console

from expeditor.config import Settings
from expeditor.monitor import parse_marker_name
from expeditor.runs import open_runtime
from expeditor.server.app import build_server
from expeditor.status import live_sessions, session_table
from expeditor.testing import read_invocation_log
from tests.integration.test_server import CALLER, DONE, error_text, markers, server_env
from tests.integration.test_server_http import free_port, running_server, serve_command, server_environment
from tests.support.fake import fake_settings
from tests.support.task_client import TASKS, TasksClientExtension, poll_until_done, start_task, task_request

pytestmark = pytest.mark.anyio

HANG = {"steps": [{"spawn": {"sleep": 60}}, {"hang": True}]}


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def agent_pids(tmp_path: Path) -> list[int]:
    entries = read_invocation_log(tmp_path / "agent.log") if (tmp_path / "agent.log").exists() else []
    return [entry["pid"] for entry in entries if entry["event"] in ("launch", "spawned")]


async def until_started(client: Client, task_id: str, tmp_path: Path, processes: int) -> None:
    """Until the task's session (and its ``processes`` - 1 children) run: their log is a file, no event exists."""
    with anyio.fail_after(30):
        while len(agent_pids(tmp_path)) < processes:
            await anyio.sleep(0.05)
        while "session" not in ((await task_request(client, "tasks/get", task_id)).status_message or ""):
            await anyio.sleep(0.05)


def nothing_left(settings: Settings, tmp_path: Path) -> None:
    assert markers(settings) == []
    assert [pid for pid in agent_pids(tmp_path) if alive(pid)] == []
    assert list(settings.sessions_dir.glob("*.json")) == [] if settings.sessions_dir.exists() else True


async def test_a_declared_run_skill_is_a_task_at_once_polled_from_working_to_its_structured_result(
    tmp_path: Path,
) -> None:
    settings = fake_settings(tmp_path, progress_interval=0.1, task_poll_interval=0.25)
    # Long enough to be seen working by a loaded machine: a run's length, not a synchronisation.
    steps = [{"assistant": "working"}, {"sleep": 4}, *DONE]
    server = build_server(settings, env=server_env(tmp_path, {"steps": steps}))
    messages: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message)

    async with Client(server, extensions=[TasksClientExtension()]) as client:
        assert TASKS in (client.server_capabilities.extensions or {})
        arguments = {"skill_command": "/make-plan 42", "cwd": str(tmp_path)}
        handle = await start_task(client, "run_skill", arguments, progress_callback=on_progress)
        assert handle.status == "working"
        assert handle.poll_interval_ms == 250
        await until_started(client, handle.task_id, tmp_path, processes=1)
        working = await task_request(client, "tasks/get", handle.task_id)
        assert working.status == "working"
        assert working.result is None
        assert "running" in (working.status_message or "")
        # A managed run like any other: the caller's marker is held, list_sessions names the task.
        (marker,) = markers(settings)
        assert parse_marker_name(marker.name) == ("run-skill", CALLER)
        listed = await client.call_tool("list_sessions", {})
        assert listed.structured_content is not None
        (session,) = listed.structured_content["sessions"]
        assert session["task_id"] == handle.task_id
        assert f"task {handle.task_id}" in error_text(listed)
        # ... and so does every `status`, in any process: the task id is in the live-session registry.
        (seen,) = live_sessions(settings)
        assert seen.task_id == handle.task_id
        assert f"(task {handle.task_id[:8]})" in render_to_text(session_table([seen]))
        done = await poll_until_done(client, handle.task_id)
    assert done.status == "completed", done
    assert done.result is not None
    assert done.result["structuredContent"]["success"] is True
    assert done.result["structuredContent"]["result_text"] == "Plan written to plan.md."
    assert done.result["structuredContent"]["caller_session_id"] == CALLER
    assert messages == []  # a task is polled: it sends no progress
    nothing_left(settings, tmp_path)


async def test_a_client_that_only_wants_the_result_gets_it_through_the_task(tmp_path: Path) -> None:
    server = build_server(fake_settings(tmp_path, task_poll_interval=0.25), env=server_env(tmp_path, {"steps": DONE}))
    async with Client(server, extensions=[TasksClientExtension()]) as client:
        result = await client.call_tool("run_skill", {"skill_command": "/make-plan 42", "cwd": str(tmp_path)})
    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    assert result.structured_content["success"] is True


async def test_tasks_cancel_ends_the_run_cancelled_with_no_process_or_marker_left(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    server = build_server(settings, env=server_env(tmp_path, HANG))
    async with Client(server, extensions=[TasksClientExtension()]) as client:
        handle = await start_task(client, "run_skill", {"skill_command": "/hang", "cwd": str(tmp_path)})
        await until_started(client, handle.task_id, tmp_path, processes=2)
        assert markers(settings) != []
        cancelled = await task_request(client, "tasks/cancel", handle.task_id)
        assert cancelled.status == "cancelled"
        assert "tasks/cancel" in (cancelled.status_message or "")
        assert cancelled.result is not None
        assert cancelled.result["structuredContent"]["termination"] == "cancelled"
        again = await task_request(client, "tasks/get", handle.task_id)
        assert again.status == "cancelled"
        nothing_left(settings, tmp_path)
    run = server_record(settings, cancelled.result["structuredContent"]["session_id"])
    assert run["termination"] == "cancelled"


def server_record(settings: Settings, session_id: str) -> dict[str, Any]:
    (run,) = [run for run in all_runs(settings) if run["run_id"] == session_id]
    return run


async def test_a_client_that_does_not_declare_tasks_gets_the_blocking_result_with_progress(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path, progress_interval=0.1)
    server = build_server(settings, env=server_env(tmp_path, {"steps": [{"sleep": 0.6}, *DONE]}))
    messages: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message)

    async with Client(server) as client:
        assert TASKS in (client.server_capabilities.extensions or {})  # offered, not taken
        result = await client.call_tool(
            "run_skill", {"skill_command": "/x", "cwd": str(tmp_path)}, progress_callback=on_progress
        )
    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    assert result.structured_content["success"] is True
    assert messages, "no progress during the blocking call"
    assert all(message and ("running" in message or "starting" in message) for message in messages)


async def test_with_mcp_tasks_off_a_declared_client_gets_the_blocking_result(tmp_path: Path) -> None:
    server = build_server(fake_settings(tmp_path, mcp_tasks=False), env=server_env(tmp_path, {"steps": DONE}))
    async with Client(server, extensions=[TasksClientExtension()]) as client:
        assert TASKS not in (client.server_capabilities.extensions or {})
        result = await client.session.call_tool(
            "run_skill", {"skill_command": "/x", "cwd": str(tmp_path)}, allow_input_required=False, allow_claimed=True
        )
    assert isinstance(result, CallToolResult), result
    assert result.structured_content is not None
    assert result.structured_content["success"] is True


async def test_an_unknown_or_forgotten_task_points_at_the_store(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path, task_retention=0.3, task_poll_interval=0.25)
    server = build_server(settings, env=server_env(tmp_path, {"steps": DONE}))
    async with Client(server, extensions=[TasksClientExtension()]) as client:
        with pytest.raises(MCPError, match="get_dispatch"):
            await task_request(client, "tasks/get", "no-such-task")
        handle = await start_task(client, "run_skill", {"skill_command": "/x", "cwd": str(tmp_path)})
        assert (await poll_until_done(client, handle.task_id)).status == "completed"
        forgotten: MCPError | None = None
        with anyio.fail_after(10):  # kept task_retention after its end, then forgotten
            while forgotten is None:
                try:
                    await task_request(client, "tasks/get", handle.task_id)
                except MCPError as exc:
                    forgotten = exc
                await anyio.sleep(0.05)
    assert "is not one this server holds" in forgotten.error.message


async def test_a_failing_call_is_a_failed_task_with_its_error(tmp_path: Path) -> None:
    server = build_server(fake_settings(tmp_path), env=server_env(tmp_path, {"steps": DONE}))
    async with Client(server, extensions=[TasksClientExtension()]) as client:
        handle = await start_task(client, "run_skill", {"skill_command": "/x", "cwd": "/"})
        failed = await poll_until_done(client, handle.task_id)
    assert failed.status == "failed"
    assert failed.error is not None
    assert "outside the allowed roots" in failed.error["message"]
    assert failed.result is not None
    assert failed.result["isError"] is True


def stdio_parameters(tmp_path: Path, scenario: dict[str, Any]) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "expeditor", "serve"],
        env={
            **server_env(tmp_path, scenario),
            "EXPEDITOR_HOME": str(tmp_path / "home"),
            "EXPEDITOR_CLAUDE_COMMAND": f"{sys.executable} -m expeditor.testing.fake_agent",
            "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
            "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
            "EXPEDITOR_TASK_POLL_INTERVAL": "0.25",
        },
    )


async def test_over_stdio_a_task_is_polled_to_its_result(tmp_path: Path) -> None:
    async with Client(stdio_parameters(tmp_path, {"steps": DONE}), extensions=[TasksClientExtension()]) as client:
        handle = await start_task(client, "run_skill", {"skill_command": "/make-plan 1", "cwd": str(tmp_path)})
        assert handle.status == "working"
        done = await poll_until_done(client, handle.task_id)
    assert done.status == "completed", done
    assert done.result is not None
    assert done.result["structuredContent"]["success"] is True
    assert done.result["structuredContent"]["caller_session_id"] == CALLER


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signalled_stdio_server_with_a_task_running_cancels_it_and_nothing_survives(
    tmp_path: Path, signum: signal.Signals
) -> None:
    settings = fake_settings(tmp_path)
    async with Client(stdio_parameters(tmp_path, HANG), extensions=[TasksClientExtension()]) as client:
        handle = await start_task(client, "run_skill", {"skill_command": "/hang", "cwd": str(tmp_path)})
        await until_started(client, handle.task_id, tmp_path, processes=2)
        (server_pid,) = {json.loads(path.read_text())["owner_pid"] for path in settings.sessions_dir.glob("*.json")}
        psutil.Process(server_pid).send_signal(signum)
        with anyio.fail_after(30):
            while alive(server_pid):
                await anyio.sleep(0.05)
    nothing_left(settings, tmp_path)
    (run,) = all_runs(settings)
    assert run["termination"] == "cancelled"
    assert signum.name in run["reason"]


async def test_a_sigkilled_stdio_server_with_a_task_running_leaves_no_process_and_the_next_start_closes_its_run(
    tmp_path: Path,
) -> None:
    # Claude Code sends no tasks/cancel when it dies: the task's run goes the way of any run of a killed server.
    settings = fake_settings(tmp_path)
    async with Client(stdio_parameters(tmp_path, HANG), extensions=[TasksClientExtension()]) as client:
        handle = await start_task(client, "run_skill", {"skill_command": "/hang", "cwd": str(tmp_path)})
        await until_started(client, handle.task_id, tmp_path, processes=2)
        (server_pid,) = {json.loads(path.read_text())["owner_pid"] for path in settings.sessions_dir.glob("*.json")}
        psutil.Process(server_pid).kill()
        with anyio.fail_after(30):
            while alive(server_pid) or any(alive(pid) for pid in agent_pids(tmp_path)):
                await anyio.sleep(0.05)
    async with open_runtime(settings):  # the next start reaps what the killed server left
        pass
    nothing_left(settings, tmp_path)
    (run,) = all_runs(settings)
    assert run["status"] == "interrupted"


def all_runs(settings: Settings) -> list[dict[str, Any]]:
    with sqlite3.connect(settings.home / "state.sqlite3") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM runs")]


async def test_a_declared_dispatch_is_a_task_whose_status_names_the_job_and_whose_result_is_the_outcome(
    tmp_path: Path,
) -> None:
    settings = fake_settings(tmp_path, task_poll_interval=0.25)
    orchestrator = {"steps": [{"assistant": "diagnosing"}, {"sleep": 3}, {"assistant": "done"}, {"result": {}}]}
    env = {**server_env(tmp_path, {}), "EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR": json.dumps(orchestrator)}
    job = {"campaign": "release-7", "name": "diagnose-cache", "recipe": "diagnose", "inputs": {"problem": "flaky"}}
    async with Client(build_server(settings, env=env), extensions=[TasksClientExtension()]) as client:
        handle = await start_task(client, "dispatch", {**job, "cwd": str(tmp_path)})
        await until_started(client, handle.task_id, tmp_path, processes=1)
        working = await task_request(client, "tasks/get", handle.task_id)
        assert working.status == "working"
        assert (working.status_message or "").startswith("release-7/diagnose-cache: session ")
        done = await poll_until_done(client, handle.task_id)
        record = await client.call_tool("get_dispatch", {"campaign": "release-7", "name": "diagnose-cache"})
    assert done.status == "completed", done
    assert done.result is not None
    assert done.result["structuredContent"]["status"] == "success"
    assert record.structured_content is not None
    assert record.structured_content["status"] == "success"
    nothing_left(settings, tmp_path)


async def test_over_http_a_task_is_polled_to_its_result(tmp_path: Path) -> None:
    port = free_port()
    env = server_environment(tmp_path, task_poll_interval="0.25")
    with running_server(serve_command("127.0.0.1", port), env, port):
        async with Client(f"http://127.0.0.1:{port}/mcp", extensions=[TasksClientExtension()]) as client:
            handle = await start_task(client, "run_skill", {"skill_command": "/x", "cwd": str(tmp_path)})
            assert handle.status == "working"
            done = await poll_until_done(client, handle.task_id)
    assert done.status == "completed", done
    assert done.result is not None
    assert done.result["structuredContent"]["success"] is True


def render_to_text(table: Any) -> str:
    console = Console(width=400, record=True)
    console.print(table)
    return console.export_text()
