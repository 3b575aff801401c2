"""dispatch with ``orchestrator: pipeline``: the child is the pipeline runner, kept alive by its step markers."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from expeditor.server.app import build_server
from expeditor.state import SqliteCampaignStore, StepStatus
from expeditor.testing import launched_prompts
from tests.support.fake import fake_settings

pytestmark = pytest.mark.anyio

THRESHOLD = 1.0
QUIET_SECONDS = 3 * THRESHOLD


def scenario(*steps: dict[str, Any]) -> str:
    return json.dumps({"steps": list(steps)})


RECIPE = f"""\
name: slowpipe
description: a pipeline whose middle step is silent three times longer than the pipeline's threshold
orchestrator: pipeline
steps:
  plan:
    skill: '/plan {scenario({"result": "plan=ship it"})}'
    capture: [plan]
  wait:
    skill: '/wait {scenario({"sleep": QUIET_SECONDS}, {"result": "waited"})}'
    stale_threshold: 10
  finish:
    skill: /finish
"""

DISPATCH = {"campaign": "release-8", "name": "ship", "recipe": "slowpipe", "inputs": {}}


def launched_commands(tmp_path: Path) -> list[str]:
    return [prompt.split()[0] for prompt in launched_prompts(tmp_path / "agent.log")]


@pytest.mark.parametrize("markers_enabled", [True, False])
async def test_a_dispatched_pipeline_waiting_on_a_silent_step_is_not_killed(
    tmp_path: Path, markers_enabled: bool
) -> None:
    settings = fake_settings(tmp_path, stale_threshold=THRESHOLD, markers_enabled=markers_enabled)
    (settings.recipes_dir).mkdir(parents=True, exist_ok=True)
    (settings.recipes_dir / "slowpipe.yaml").write_text(RECIPE)
    env = {**os.environ, "CLAUDE_CODE_SESSION_ID": str(uuid.uuid4()), "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log")}
    async with Client(build_server(settings, env=env)) as client:
        first = await client.call_tool("dispatch", {**DISPATCH, "cwd": str(tmp_path)})
        outcome = first.structured_content
        assert outcome is not None
        if not markers_enabled:
            # The twin that proves the point: without its step marker the silent pipeline is stopped.
            assert outcome["status"] == "failure"
            assert outcome["result"]["termination"] == "idle_stall"
            return
        assert outcome["status"] == "success", outcome["message"]
        run = outcome["result"]
        assert run["duration_s"] > QUIET_SECONDS
        assert {s["marker"].split("-in-progress-")[0] for s in run["suppressed_by"]} == {"pipeline-step"}
        assert outcome["outputs"] == {"plan": "ship it"}
        assert launched_commands(tmp_path) == ["/plan", "/wait", "/finish"]

        again = await client.call_tool("dispatch", {**DISPATCH, "cwd": str(tmp_path)})
        assert again.structured_content is not None
        assert again.structured_content["short_circuited"] is True
        assert len(launched_commands(tmp_path)) == 3

        forced = await client.call_tool("dispatch", {**DISPATCH, "cwd": str(tmp_path), "force": True})
        assert forced.structured_content is not None
        assert forced.structured_content["status"] == "success"
        # A forced rerun starts over: every step runs again, none is replayed.
        assert launched_commands(tmp_path) == ["/plan", "/wait", "/finish"] * 2
    store = SqliteCampaignStore(settings.state_path)
    try:
        assert [(e.step, e.status) for e in store.list_steps("release-8", "ship")] == [
            ("plan", StepStatus.SUCCESS),
            ("wait", StepStatus.SUCCESS),
            ("finish", StepStatus.SUCCESS),
        ]
        runs = store.list_runs("release-8", job_name="ship")
        assert sorted(r.kind.value for r in runs) == ["pipeline"] * 2 + ["skill"] * 6
        pipelines = {r.run_id for r in runs if r.kind.value == "pipeline"}
        assert {r.caller_session_id for r in runs if r.kind.value == "skill"} == pipelines
    finally:
        store.close()
