"""Over HTTP a caller is its credential: each launched session holds its own token, bound to its id and kind,
revoked when its run ends; a header names nobody, and cancel_session stops only what the caller launched.

The tests run a real ``expeditor serve --transport http`` on 127.0.0.1 with the fake agent; the last drives the
supervisor in-process to watch a token's life.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import psutil
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from expeditor.executor import SessionKind
from expeditor.monitor import parse_marker_name
from expeditor.runs import CallerContext, open_runtime
from expeditor.runs.credentials import SessionCredential
from expeditor.state import SqliteCampaignStore
from expeditor.testing import read_invocation_log
from tests.integration.test_server_http import (
    TOKEN,
    free_port,
    initialize_status,
    running_server,
    serve_command,
    server_environment,
)
from tests.support.fake import fake_settings, scenario_request

pytestmark = pytest.mark.anyio

FAST = {
    "poll_interval": "0.05",
    "children_interval": "0.2",
    "kill_grace": "0.5",
    "result_exit_grace": "0.3",
    "marker_freshness": "2",
    "marker_heartbeat_interval": "0.1",
}
HANG = {"steps": [{"hang": True}]}
DISPATCH = {"campaign": "release-7", "name": "diagnose-cache", "recipe": "diagnose", "inputs": {"problem": "flaky"}}


def environment(tmp_path: Path, scenarios: dict[str, dict[str, Any]], **settings: str) -> dict[str, str]:
    """A server environment with the fake agent's scenario per session kind and an invocation log."""
    env = server_environment(tmp_path, **{"http_token": TOKEN, **FAST, **settings})
    env.pop("EXPEDITOR_FAKE_SCENARIO")  # scenarios come per kind, or in the prompt
    env["EXPEDITOR_FAKE_LOG"] = str(tmp_path / "agent.log")
    for kind, scenario in scenarios.items():
        env[f"EXPEDITOR_FAKE_SCENARIO_{kind.upper()}"] = json.dumps(scenario)
    return env


@pytest.fixture
def port() -> int:
    return free_port()


@asynccontextmanager
async def connected(url: str, headers: dict[str, str]) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=120.0)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def call(url: str, token: str, tool: str, arguments: dict[str, Any], **headers: str) -> CallToolResult:
    async with connected(url, {"authorization": f"Bearer {token}", **headers}) as session:
        return await session.call_tool(tool, arguments)


def text_of(result: CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


def launches(tmp_path: Path) -> list[dict[str, Any]]:
    return [entry for entry in read_invocation_log(tmp_path / "agent.log") if entry["event"] == "launch"]


async def launched(tmp_path: Path, count: int) -> list[dict[str, Any]]:
    with anyio.fail_after(30):
        while len(found := launches(tmp_path)) < count:
            await anyio.sleep(0.05)
    return found


def session_token_of(launch: dict[str, Any]) -> str:
    """The token in the private MCP config a session was given, read as the session itself would."""
    argv: list[str] = launch["argv"]
    config = json.loads(Path(argv[argv.index("--mcp-config") + 1]).read_text())
    authorization: str = config["mcpServers"]["expeditor"]["headers"]["authorization"]
    assert "x-expeditor-caller-session" not in config["mcpServers"]["expeditor"]["headers"]
    return authorization.removeprefix("Bearer ")


def marker_owners(tmp_path: Path) -> Iterator[tuple[str, str]]:
    for path in (tmp_path / "home" / "markers").glob("*.marker"):
        parsed = parse_marker_name(path.name)
        if parsed is not None:
            yield parsed


async def test_a_skill_launched_over_http_holds_no_server_token_and_cannot_launch_a_session(
    tmp_path: Path, port: int
) -> None:
    url = f"http://127.0.0.1:{port}/mcp"
    env = environment(tmp_path, {"skill": HANG})
    with running_server(serve_command("127.0.0.1", port), env, port):
        async with anyio.create_task_group() as group:
            group.start_soon(call, url, TOKEN, "run_skill", {"skill_command": "/x", "cwd": str(tmp_path)})
            (skill,) = await launched(tmp_path, 1)
            agent = psutil.Process(skill["pid"])
            argv, environ = agent.cmdline(), agent.environ()
            assert not any(TOKEN in part for part in argv)
            assert not any(TOKEN in value for value in environ.values())
            assert "--mcp-config" not in argv  # a skill may call no expeditor tool, so it is given no server
            # What a skill could try with a shell: name itself (or anyone) in the header, with no or a made-up token.
            forged = {"x-expeditor-caller-session": skill["session_id"]}
            for token in (None, "made-up", skill["session_id"]):
                headers = {"accept": "application/json, text/event-stream", **forged}
                if token is not None:
                    headers["authorization"] = f"Bearer {token}"
                async with httpx2.AsyncClient(timeout=10) as client:
                    response = await client.post(
                        url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers
                    )
                assert response.status_code == 401
            cancelled = await call(url, TOKEN, "cancel_session", {"session_id": skill["session_id"]})
            assert not cancelled.is_error, text_of(cancelled)  # the server token's holder may stop anything
    assert len(launches(tmp_path)) == 1


async def test_a_header_naming_another_session_holds_no_marker_for_it_and_the_stuck_victim_dies_at_its_threshold(
    tmp_path: Path, port: int
) -> None:
    url = f"http://127.0.0.1:{port}/mcp"
    threshold = 2.0
    env = environment(tmp_path, {})
    victim_scenario = json.dumps(HANG)
    attacker_scenario = json.dumps({"steps": [{"sleep": 4 * threshold}, {"assistant": "done"}, {"result": {}}]})
    seen: set[tuple[str, str]] = set()
    outcome: dict[str, CallToolResult] = {}

    async def run_victim() -> None:
        arguments = {"skill_command": f"/victim {victim_scenario}", "cwd": str(tmp_path), "stale_threshold": threshold}
        outcome["victim"] = await call(url, TOKEN, "run_skill", arguments)

    async def watch_markers() -> None:
        while True:
            seen.update(marker_owners(tmp_path))
            await anyio.sleep(0.05)

    with running_server(serve_command("127.0.0.1", port), env, port):
        async with anyio.create_task_group() as group:
            group.start_soon(run_victim)
            group.start_soon(watch_markers)
            (victim,) = await launched(tmp_path, 1)
            arguments = {"skill_command": f"/attacker {attacker_scenario}", "cwd": str(tmp_path)}
            attacker = await call(
                url, TOKEN, "run_skill", arguments, **{"x-expeditor-caller-session": victim["session_id"]}
            )
            group.cancel_scope.cancel()
    result = outcome["victim"].structured_content
    assert result is not None, text_of(outcome["victim"])
    assert result["termination"] in ("stale", "idle_stall")
    assert result["duration_s"] < threshold + 2.0
    assert not result["suppressed_by"]
    assert attacker.structured_content is not None
    assert attacker.structured_content["caller_session_id"] is None  # the header named nobody
    assert not any(session == victim["session_id"] for _, session in seen)


async def test_an_orchestrator_token_calls_run_skill_keys_its_child_marker_on_it_and_dies_with_its_run(
    tmp_path: Path, port: int
) -> None:
    url = f"http://127.0.0.1:{port}/mcp"
    run_skill = {"skill_command": "/expeditor:diagnose-problem work", "cwd": str(tmp_path)}
    orchestrator_scenario = {
        "steps": [
            {"call_tool": {"server": "expeditor", "tool": "run_skill", "arguments": run_skill, "timeout": 60}},
            {"assistant": "done"},
            {"result": {}},
        ]
    }
    skill_scenario = {"steps": [{"sleep": 1.5}, {"assistant": "root_cause=race"}, {"result": {}}]}
    env = environment(tmp_path, {"orchestrator": orchestrator_scenario, "skill": skill_scenario})
    seen: set[tuple[str, str]] = set()
    outcome: dict[str, CallToolResult] = {}

    async def dispatch_job() -> None:
        outcome["dispatch"] = await call(url, TOKEN, "dispatch", {**DISPATCH, "cwd": str(tmp_path)})

    async def watch_markers() -> None:
        while True:
            seen.update(marker_owners(tmp_path))
            await anyio.sleep(0.05)

    with running_server(serve_command("127.0.0.1", port), env, port):
        async with anyio.create_task_group() as group:
            group.start_soon(watch_markers)
            group.start_soon(dispatch_job)
            orchestrator, _skill = await launched(tmp_path, 2)
            token = session_token_of(orchestrator)
            assert token != TOKEN
            assert await initialize_status(url, host=f"127.0.0.1:{port}", token=token) == 200  # live: admitted
            # Its kind comes with its token: an orchestrator may not dispatch, whatever header it sends.
            nested = {**DISPATCH, "name": "nested", "cwd": str(tmp_path)}
            refused = await call(url, token, "dispatch", nested, **{"x-expeditor-caller-session": str(uuid.uuid4())})
            assert refused.is_error
            assert "not available to a orchestrator session" in text_of(refused)
            with anyio.fail_after(60):
                while "dispatch" not in outcome:
                    await anyio.sleep(0.05)
            group.cancel_scope.cancel()
        # Its run has ended: the token it was given no longer opens anything.
        assert await initialize_status(url, host=f"127.0.0.1:{port}", token=token) == 401
    dispatched = outcome["dispatch"].structured_content
    assert dispatched is not None, text_of(outcome["dispatch"])
    assert dispatched["status"] == "success", dispatched["message"]
    assert ("run-skill", orchestrator["session_id"]) in seen
    assert {session for label, session in seen if label == "run-skill"} == {orchestrator["session_id"]}
    assert [entry["env"]["EXPEDITOR_SESSION_KIND"] for entry in launches(tmp_path)] == ["orchestrator", "skill"]
    store = SqliteCampaignStore(tmp_path / "home" / "state.sqlite3")
    try:
        (skill_run,) = [run for run in store.list_runs() if run.kind.value == "skill"]
        assert skill_run.caller_session_id == orchestrator["session_id"]
    finally:
        store.close()


async def test_cancel_session_of_a_session_the_caller_did_not_launch_is_refused(tmp_path: Path, port: int) -> None:
    url = f"http://127.0.0.1:{port}/mcp"
    run_skill = {"skill_command": "/expeditor:diagnose-problem work", "cwd": str(tmp_path)}
    orchestrator_scenario = {
        "steps": [
            {"call_tool": {"server": "expeditor", "tool": "run_skill", "arguments": run_skill, "timeout": 60}},
            # It stays until cancelled: ending by itself once its child is cancelled would race the last cancel.
            {"hang": True},
        ]
    }
    env = environment(tmp_path, {"orchestrator": orchestrator_scenario, "skill": HANG})
    with running_server(serve_command("127.0.0.1", port), env, port):
        async with anyio.create_task_group() as group:
            group.start_soon(call, url, TOKEN, "dispatch", {**DISPATCH, "cwd": str(tmp_path)})
            orchestrator, child = await launched(tmp_path, 2)
            group.start_soon(call, url, TOKEN, "run_skill", {"skill_command": "/other", "cwd": str(tmp_path)})
            *_, other = await launched(tmp_path, 3)
            token = session_token_of(orchestrator)

            refused = await call(url, token, "cancel_session", {"session_id": other["session_id"]})
            assert refused.is_error
            assert "was not launched by you" in text_of(refused)
            assert psutil.pid_exists(other["pid"])
            refused = await call(url, token, "cancel_session", {"session_id": orchestrator["session_id"]})
            assert refused.is_error  # not even itself: its launcher decides that

            own = await call(url, token, "cancel_session", {"session_id": child["session_id"]})
            assert not own.is_error, text_of(own)
            for session in (other, orchestrator):
                stopped = await call(url, TOKEN, "cancel_session", {"session_id": session["session_id"]})
                assert not stopped.is_error, text_of(stopped)


@pytest.mark.parametrize("ending", ["cancelled", "completed"])
async def test_a_session_token_is_bound_to_its_run_and_revoked_however_the_run_ends(
    tmp_path: Path, ending: str
) -> None:
    settings = fake_settings(tmp_path)
    scenario = HANG if ending == "cancelled" else {"steps": [{"sleep": 0.5}, {"result": {}}]}
    request = scenario_request(
        tmp_path, scenario, kind=SessionKind.ORCHESTRATOR, env={"EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log")}
    )
    caller = CallerContext("top-session", None, ("above-it",))
    async with (
        open_runtime(settings, http_url="http://127.0.0.1:9/mcp") as runtime,
        anyio.create_task_group() as group,
    ):
        credentials = runtime.supervisor.credentials
        assert len(credentials) == 0
        handle = runtime.supervisor.start(group, request, caller)
        (launch,) = await launched(tmp_path, 1)
        token = session_token_of(launch)
        assert credentials.identify(token) == SessionCredential(
            launch["session_id"], SessionKind.ORCHESTRATOR, ("top-session", "above-it")
        )
        if ending == "cancelled":
            handle.cancel("the test has seen enough", grace=0.05)
        with anyio.fail_after(20):
            result = await handle.result()
        assert result.termination.value == ending
        assert credentials.identify(token) is None
        assert len(credentials) == 0
