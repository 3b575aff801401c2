"""The MCP server through a real MCP client: in memory for every tool, over stdio as a subprocess."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import TextContent

from expeditor.config import Settings
from expeditor.monitor import parse_marker_name
from expeditor.server.app import build_server
from expeditor.testing import read_invocation_log
from tests.support.fake import fake_settings

pytestmark = pytest.mark.anyio

CALLER = str(uuid.uuid4())
DONE = [{"assistant": "Plan written to plan.md."}, {"result": {}}]


def server_env(tmp_path: Path, scenario: dict[str, Any], **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "EXPEDITOR_FAKE_SCENARIO": json.dumps(scenario),
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
        "CLAUDE_CODE_SESSION_ID": CALLER,
        **extra,
    }


def error_text(result: Any) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


def markers(settings: Settings) -> list[Path]:
    return sorted(settings.markers_path.glob("*.marker")) if settings.markers_path.exists() else []


async def test_run_skill_returns_the_structured_result(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    server = build_server(settings, env=server_env(tmp_path, {"steps": DONE}))
    async with Client(server) as client:
        result = await client.call_tool(
            "run_skill", {"skill_command": "/make-plan 42", "cwd": str(tmp_path), "model": "opus"}
        )
    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    assert result.structured_content["success"] is True
    assert result.structured_content["result_text"] == "Plan written to plan.md."
    assert result.structured_content["caller_session_id"] == CALLER
    (launch,) = [entry for entry in read_invocation_log(tmp_path / "agent.log") if entry["event"] == "launch"]
    assert launch["env"]["EXPEDITOR_PARENT_SESSION_ID"] == CALLER
    assert launch["env"]["EXPEDITOR_SESSION_KIND"] == "skill"
    assert "--mcp-config" not in launch["argv"]  # a skill session may launch nothing further
    assert markers(settings) == []


async def test_run_skill_holds_a_marker_for_its_caller_until_the_deadline_and_reports_progress(
    tmp_path: Path,
) -> None:
    settings = fake_settings(tmp_path, progress_interval=0.2)
    server = build_server(settings, env=server_env(tmp_path, {"steps": [{"sleep": 1.0}, *DONE]}))
    seen: list[tuple[float, str | None]] = []
    held: list[dict[str, Any]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))
        for path in markers(settings):
            held.append({"name": path.name, **json.loads(path.read_text())})

    async with Client(server) as client:
        result = await client.call_tool(
            "run_skill",
            {"skill_command": "/long", "cwd": str(tmp_path), "timeout": 100},
            progress_callback=on_progress,
        )
    assert not result.is_error, error_text(result)
    assert len(seen) >= 3
    assert all(message and "running" in message for _, message in seen)
    assert held, "no marker while the call ran"
    assert parse_marker_name(held[0]["name"]) == ("run-skill", CALLER)
    assert held[0]["expires_at"] - held[0]["started_at"] == pytest.approx(100 + settings.kill_grace, abs=1)
    assert markers(settings) == []


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"model": "gpt-5"}, "sonnet, opus, haiku"),
        ({"cwd": "/"}, "outside the allowed roots"),
        ({"cwd": "/nonexistent/dir"}, "does not exist"),
        ({"stale_threshold": -1}, "stale_threshold"),
        ({"resume_session_id": "../../etc"}, "resume_session_id"),
    ],
)
async def test_bad_arguments_are_tool_errors_the_model_can_act_on(
    tmp_path: Path, arguments: dict[str, Any], expected: str
) -> None:
    server = build_server(fake_settings(tmp_path), env=server_env(tmp_path, {"steps": DONE}))
    async with Client(server) as client:
        result = await client.call_tool("run_skill", {"skill_command": "/x", "cwd": str(tmp_path), **arguments})
    assert result.is_error
    assert expected in error_text(result)
    assert not (tmp_path / "agent.log").exists()


async def test_a_skill_session_may_not_launch_further_sessions(tmp_path: Path) -> None:
    env = server_env(tmp_path, {"steps": DONE}, EXPEDITOR_SESSION_KIND="skill")
    server = build_server(fake_settings(tmp_path), env=env)
    async with Client(server) as client:
        result = await client.call_tool("run_skill", {"skill_command": "/x", "cwd": str(tmp_path)})
    assert result.is_error
    assert "not available to a skill session" in error_text(result)


async def test_cancelling_a_call_leaves_no_process_and_no_marker(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    server = build_server(settings, env=server_env(tmp_path, {"steps": [{"spawn": {"sleep": 60}}, {"hang": True}]}))
    async with Client(server) as client:
        with anyio.move_on_after(1.5):
            await client.call_tool("run_skill", {"skill_command": "/hang", "cwd": str(tmp_path)})
        with anyio.fail_after(10):
            while settings.sessions_dir.exists() and list(settings.sessions_dir.glob("*.json")):
                await anyio.sleep(0.05)
    assert markers(settings) == []
    # The conftest guard fails this test if the agent or its child is still alive.


async def test_list_sessions_and_cancel_session(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    server = build_server(settings, env=server_env(tmp_path, {"steps": [{"assistant": "working"}, {"hang": True}]}))
    outcome: dict[str, Any] = {}
    async with Client(server) as client:

        async def call() -> None:
            result = await client.call_tool("run_skill", {"skill_command": "/hang", "cwd": str(tmp_path)})
            outcome["result"] = result.structured_content

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            with anyio.fail_after(10):
                while True:
                    listed = await client.call_tool("list_sessions", {})
                    sessions = (listed.structured_content or {}).get("sessions") or []
                    if sessions:
                        break
                    await anyio.sleep(0.05)
            (session,) = sessions
            assert session["caller_session_id"] == CALLER
            assert session["kind"] == "skill"
            assert session["active_marker"] is None  # the marker is the caller's, not the child's
            cancelled = await client.call_tool("cancel_session", {"session_id": session["session_id"]})
            assert cancelled.structured_content == {
                "cancelled": True,
                "message": cancelled.structured_content["message"],
            }
        unknown = await client.call_tool("cancel_session", {"session_id": "nope"})
    assert outcome["result"]["termination"] == "cancelled"
    assert "cancel_session" in outcome["result"]["reason"]
    assert unknown.is_error


async def test_serve_over_stdio_runs_a_skill_for_a_real_client(tmp_path: Path) -> None:
    settings_env = {
        "EXPEDITOR_HOME": str(tmp_path / "home"),
        "EXPEDITOR_CLAUDE_COMMAND": f"{sys.executable} -m expeditor.testing.fake_agent",
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
    }
    parameters = StdioServerParameters(
        command=sys.executable,
        args=["-m", "expeditor", "serve"],
        env={**server_env(tmp_path, {"steps": DONE}), **settings_env},
    )
    async with Client(parameters) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert {"run_skill", "list_sessions", "cancel_session"} <= tools
        result = await client.call_tool("run_skill", {"skill_command": "/make-plan 1", "cwd": str(tmp_path)})
    assert not result.is_error, error_text(result)
    assert result.structured_content is not None
    assert result.structured_content["success"] is True
    assert result.structured_content["caller_session_id"] == CALLER
    log = (tmp_path / "home" / "logs" / "expeditor.log").read_text()
    assert "server pid=" in log


async def test_list_recipes_and_validate_recipe(tmp_path: Path) -> None:
    server = build_server(fake_settings(tmp_path), env=server_env(tmp_path, {"steps": DONE}))
    broken = "name: mine\ndescription: x\nsteps:\n  plan:\n    skill: /expeditor:make-plan {topik}\n"
    async with Client(server) as client:
        listed = await client.call_tool("list_recipes", {})
        checked = await client.call_tool("validate_recipe", {"text": broken, "name": "mine"})
    recipes = {recipe["name"]: recipe for recipe in (listed.structured_content or {}).get("recipes", [])}
    assert {"demo", "diagnose", "implementation"} <= set(recipes)
    assert "problem" in recipes["diagnose"]["inputs"]
    assert recipes["diagnose"]["steps"] == ["reproduce", "investigate"]
    assert checked.structured_content is not None
    assert checked.structured_content["valid"] is False
    assert any("{topik}" in problem for problem in checked.structured_content["problems"])
