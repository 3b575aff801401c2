"""Dispatch through the MCP server: never rerun finished work, never launch twice, survive long tool calls.

The three-level regression is the reason expeditor exists: a client dispatches a job; the
dispatched orchestrator calls run_skill through its own nested expeditor server; the skill runs
several times longer than the orchestrator's stale threshold while the orchestrator writes
nothing. The nested server's marker keeps the orchestrator alive. Without markers it is killed.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import TextContent

from expeditor.server.app import build_server
from expeditor.state import SqliteCampaignStore
from expeditor.testing import read_invocation_log
from tests.support.fake import fake_settings

pytestmark = pytest.mark.anyio

CALLER = str(uuid.uuid4())
THRESHOLD = 1.0
SKILL_SECONDS = 4 * THRESHOLD


def orchestrator_scenario(cwd: Path) -> dict[str, Any]:
    run_skill = {"skill_command": "/expeditor:diagnose-problem work flaky-cache", "cwd": str(cwd)}
    return {
        "steps": [
            {"assistant": "Running the diagnosis step through run_skill."},
            {"call_tool": {"server": "expeditor", "tool": "run_skill", "arguments": run_skill, "timeout": 60}},
            {"assistant": "Diagnosis finished: the cache layer drops writes."},
            {"result": {}},
        ]
    }


SKILL_SCENARIO = {
    "steps": [
        {"tick": {"interval": 0.25, "duration": SKILL_SECONDS, "to": "both"}},
        {"assistant": "root_cause=cache eviction race"},
        {"result": {}},
    ]
}


def server_env(tmp_path: Path, **scenarios: dict[str, Any]) -> dict[str, str]:
    env = {
        **os.environ,
        "CLAUDE_CODE_SESSION_ID": CALLER,
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
    }
    for kind, scenario in scenarios.items():
        env[f"EXPEDITOR_FAKE_SCENARIO_{kind.upper()}"] = json.dumps(scenario)
    return env


def launches(tmp_path: Path) -> list[dict[str, Any]]:
    return [entry for entry in read_invocation_log(tmp_path / "agent.log") if entry["event"] == "launch"]


def text_of(result: Any) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


DISPATCH = {"campaign": "release-7", "name": "diagnose-cache", "recipe": "diagnose", "inputs": {"problem": "flaky"}}


@pytest.mark.parametrize("markers_enabled", [True, False])
async def test_a_dispatched_orchestrator_waiting_on_a_long_run_skill_is_not_killed(
    tmp_path: Path, markers_enabled: bool
) -> None:
    settings = fake_settings(
        tmp_path,
        stale_threshold=THRESHOLD,
        children_interval=0.2,
        markers_enabled=markers_enabled,
        marker_heartbeat_interval=0.2,
    )
    env = server_env(tmp_path, orchestrator=orchestrator_scenario(tmp_path), skill=SKILL_SCENARIO)
    async with Client(build_server(settings, env=env)) as client:
        first = await client.call_tool("dispatch", {**DISPATCH, "cwd": str(tmp_path)})
        assert not first.is_error, text_of(first)
        outcome = first.structured_content
        assert outcome is not None
        kinds = [entry["env"]["EXPEDITOR_SESSION_KIND"] for entry in launches(tmp_path)]
        if not markers_enabled:
            # The proof that markers are what kept it alive: without them it is killed as stale.
            assert outcome["status"] == "failure"
            assert outcome["result"]["termination"] == "stale"
            return
        assert outcome["status"] == "success", outcome["message"]
        run = outcome["result"]
        assert run["termination"] == "completed"
        assert run["duration_s"] > SKILL_SECONDS
        # Held by the marker (the markers_enabled=False twin is killed); child activity may shorten the span.
        assert run["suppressed_s"] > 0
        assert [s["marker"].split("-in-progress-")[0] for s in run["suppressed_by"]] == ["run-skill"]
        assert kinds == ["orchestrator", "skill"]
        orchestrator, skill = launches(tmp_path)
        assert skill["env"]["EXPEDITOR_PARENT_SESSION_ID"] == orchestrator["session_id"]

        second = await client.call_tool("dispatch", {**DISPATCH, "cwd": str(tmp_path)})
        repeat = second.structured_content
        assert repeat is not None
        assert repeat["short_circuited"] is True
        assert repeat["inputs_changed"] is False
        assert (repeat["dispatch_id"], repeat["dispatched_session_id"]) == (
            outcome["dispatch_id"],
            outcome["dispatched_session_id"],
        )
        assert len(launches(tmp_path)) == 2  # nothing new was started

        changed = await client.call_tool("dispatch", {**DISPATCH, "inputs": {"problem": "other"}, "cwd": str(tmp_path)})
        assert changed.structured_content is not None
        assert changed.structured_content["short_circuited"] is True
        assert changed.structured_content["inputs_changed"] is True
    store = SqliteCampaignStore(settings.state_path)
    try:
        runs = store.list_runs("release-7", job_name="diagnose-cache")
        assert [(r.kind.value, r.status.value) for r in runs] == [("orchestrator", "success")]
        all_runs = store.list_runs()
        assert sorted(r.kind.value for r in all_runs) == ["orchestrator", "skill"]
    finally:
        store.close()


async def test_concurrent_dispatches_of_one_job_launch_one_session(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    scenario = {"steps": [{"sleep": 1.0}, {"assistant": "done"}, {"result": {}}]}
    env = server_env(tmp_path, orchestrator=scenario)
    outcomes: list[dict[str, Any]] = []
    async with Client(build_server(settings, env=env)) as client:

        async def call() -> None:
            result = await client.call_tool("dispatch", {**DISPATCH, "cwd": str(tmp_path)})
            assert result.structured_content is not None, text_of(result)
            outcomes.append(result.structured_content)

        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(call)
        late = await client.call_tool("dispatch", {**DISPATCH, "cwd": str(tmp_path)})
    assert len(launches(tmp_path)) == 1
    assert sum(1 for o in outcomes if o["result"] is not None) == 1
    assert all(o["already_running"] or o["short_circuited"] or o["result"] for o in outcomes)
    assert late.structured_content is not None
    assert late.structured_content["short_circuited"] is True


async def test_dispatch_refuses_unknown_recipes_and_unsafe_names(tmp_path: Path) -> None:
    async with Client(build_server(fake_settings(tmp_path), env=server_env(tmp_path))) as client:
        unknown = await client.call_tool("dispatch", {**DISPATCH, "recipe": "diagnos"})
        unsafe = await client.call_tool("dispatch", {**DISPATCH, "name": "../etc"})
        missing = await client.call_tool("dispatch", {**DISPATCH, "inputs": {}})
    assert unknown.is_error
    assert "did you mean 'diagnose'" in text_of(unknown)
    assert unsafe.is_error
    assert "job name" in text_of(unsafe)
    assert missing.is_error
    assert "problem" in text_of(missing)
    assert launches(tmp_path) == []


async def test_an_orchestrator_may_run_skills_but_not_dispatch(tmp_path: Path) -> None:
    env = {**server_env(tmp_path), "EXPEDITOR_SESSION_KIND": "orchestrator"}
    async with Client(build_server(fake_settings(tmp_path), env=env)) as client:
        refused = await client.call_tool("dispatch", {**DISPATCH, "cwd": str(tmp_path)})
    assert refused.is_error
    assert "only a top-level caller may dispatch" in text_of(refused)
