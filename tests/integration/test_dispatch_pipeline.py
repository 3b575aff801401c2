"""dispatch with ``orchestrator: pipeline``: the child is the pipeline runner, kept alive by its step markers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from mcp import Client

from expeditor.server.app import build_server
from expeditor.state import SqliteCampaignStore, StepStatus
from expeditor.testing import launched_prompts, read_invocation_log
from tests.support.fake import FAKE_AGENT_COMMAND, fake_settings

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


THREE_STEPS = """\
name: threestep
description: three skill steps, the last one scripted per run
orchestrator: pipeline
steps:
  one: {skill: /one}
  two: {skill: /two}
  three: {skill: /three}
"""


def test_a_killed_dispatcher_s_pipeline_resumes_at_its_step_on_the_next_dispatch(tmp_path: Path) -> None:
    # Nothing outlives the dispatcher, and the next dispatch replays steps one and two instead of rerunning them.
    home = tmp_path / "home"
    (home / "recipes").mkdir(parents=True)
    (home / "recipes" / "threestep.yaml").write_text(THREE_STEPS)
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "three.json").write_text(scenario({"assistant": "working"}, {"hang": True}))
    env = {
        **os.environ,
        "EXPEDITOR_HOME": str(home),
        "EXPEDITOR_CLAUDE_COMMAND": FAKE_AGENT_COMMAND,
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
        "EXPEDITOR_FAKE_SCENARIO_DIR": str(scenarios),
    }
    command = [
        sys.executable,
        "-m",
        "expeditor",
        "dispatch",
        "c",
        "job",
        "--recipe",
        "threestep",
        "--cwd",
        str(tmp_path),
    ]
    dispatcher = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        # Another process's progress: there is no event to wait on, only its log.
        while "/three" not in launched_commands(tmp_path):
            assert time.monotonic() < deadline, "step three never started"
            time.sleep(0.05)
    finally:
        dispatcher.kill()
        dispatcher.wait()
    deadline = time.monotonic() + 10
    while any(
        _alive(entry["pid"]) for entry in read_invocation_log(tmp_path / "agent.log") if entry["event"] == "launch"
    ):
        assert time.monotonic() < deadline, "a step outlived its dispatcher"
        time.sleep(0.05)

    (scenarios / "three.json").write_text(scenario({"result": "done"}))
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    assert launched_commands(tmp_path) == ["/one", "/two", "/three", "/three"]
    store = SqliteCampaignStore(home / "state.sqlite3")
    try:
        record = store.get("c", "job")
        assert record is not None
        assert (record.status.value, record.attempts) == ("success", 2)
    finally:
        store.close()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
