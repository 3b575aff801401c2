"""A result whose text cannot be encoded as it came (a lone surrogate, a byte that is not UTF-8) still
ends as a success with its text kept, through every surface: the CLI, run_skill and dispatch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import TextContent

from expeditor.server.app import build_server
from expeditor.state import SqliteCampaignStore
from expeditor.testing import read_invocation_log
from tests.support.fake import FAKE_AGENT_COMMAND, fake_settings

pytestmark = pytest.mark.anyio

KEPT_TEXT = "before \ufffd after"


def scenario_ending_with(result_value: str) -> dict[str, Any]:
    """A session that works, then prints its result event as raw bytes: ``result_value`` goes between the quotes."""
    line = '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"' + result_value + '"}'
    return {"steps": [{"assistant": "Working on it."}, {"raw_stdout": line}]}


SCENARIOS = {
    # The JSON escape of half a UTF-16 pair: what a JavaScript string cut mid-pair serialises to.
    "lone surrogate": scenario_ending_with("before \\ud800 after"),
    # The fake agent writes \udcff as the single byte 0xff (surrogateescape): not UTF-8.
    "invalid utf-8 byte": scenario_ending_with("before \udcff after"),
}
CASES = pytest.mark.parametrize("scenario", list(SCENARIOS.values()), ids=list(SCENARIOS))


def text_of(result: Any) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


@CASES
def test_run_skill_on_the_command_line_succeeds_with_the_text_kept(tmp_path: Path, scenario: dict[str, Any]) -> None:
    env = {
        **os.environ,
        "EXPEDITOR_CLAUDE_COMMAND": FAKE_AGENT_COMMAND,
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
        "EXPEDITOR_FAKE_SCENARIO": json.dumps(scenario),
    }
    done = subprocess.run(
        [sys.executable, "-m", "expeditor", "--home", str(tmp_path / "home"), "run-skill", "/x", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    result = json.loads(done.stdout.decode("utf-8"))
    assert (result["success"], result["termination"]) == (True, "completed")
    assert result["result_text"] == KEPT_TEXT


@CASES
async def test_the_run_skill_tool_succeeds_with_the_text_kept_and_records_the_run(
    tmp_path: Path, scenario: dict[str, Any]
) -> None:
    settings = fake_settings(tmp_path)
    env = {**os.environ, "EXPEDITOR_FAKE_SCENARIO": json.dumps(scenario), "CLAUDE_CODE_SESSION_ID": str(uuid.uuid4())}
    async with Client(build_server(settings, env=env)) as client:
        result = await client.call_tool("run_skill", {"skill_command": "/x", "cwd": str(tmp_path)})
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    assert result.structured_content["success"] is True
    assert result.structured_content["result_text"] == KEPT_TEXT
    store = SqliteCampaignStore(settings.state_path)
    try:
        assert [run.status.value for run in store.list_runs()] == ["success"]
    finally:
        store.close()


@CASES
async def test_a_dispatch_succeeds_with_the_text_kept_and_its_record_ends_success(
    tmp_path: Path, scenario: dict[str, Any]
) -> None:
    settings = fake_settings(tmp_path)
    env = {
        **os.environ,
        "EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR": json.dumps(scenario),
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
        "CLAUDE_CODE_SESSION_ID": str(uuid.uuid4()),
    }
    job = {"campaign": "c", "name": "j", "recipe": "diagnose", "inputs": {"problem": "p"}, "cwd": str(tmp_path)}
    async with Client(build_server(settings, env=env)) as client:
        first = await client.call_tool("dispatch", job)
        assert not first.is_error, text_of(first)
        outcome = first.structured_content
        assert outcome is not None
        assert outcome["status"] == "success", outcome["message"]
        assert outcome["result"]["result_text"] == KEPT_TEXT
        # The record left `running`: a repeat is answered from it, and nothing is launched again.
        repeat = await client.call_tool("dispatch", job)
        assert repeat.structured_content is not None
        assert repeat.structured_content["short_circuited"] is True
    store = SqliteCampaignStore(settings.state_path)
    try:
        record = store.get("c", "j")
        assert record is not None
        assert record.status.value == "success"
        assert KEPT_TEXT in (record.result_summary or "")
    finally:
        store.close()
    launches = [entry for entry in read_invocation_log(tmp_path / "agent.log") if entry["event"] == "launch"]
    assert len(launches) == 1
