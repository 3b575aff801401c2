"""Faults a tool call meets reach the calling model as one sentence, and leave nothing behind."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import TextContent

from expeditor.server.app import build_server
from expeditor.state import SqliteCampaignStore
from expeditor.testing import read_invocation_log
from tests.support.fake import fake_settings

pytestmark = pytest.mark.anyio

CALLER = str(uuid.uuid4())


def env(tmp_path: Path) -> dict[str, str]:
    done = {"steps": [{"assistant": "done"}, {"result": {}}]}
    return {
        **os.environ,
        "CLAUDE_CODE_SESSION_ID": CALLER,
        "EXPEDITOR_FAKE_SCENARIO": json.dumps(done),
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
    }


def text_of(result: Any) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


def launched(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "agent.log"
    return [e for e in read_invocation_log(log) if e["event"] == "launch"] if log.exists() else []


async def test_a_marker_directory_that_cannot_be_written_is_named_and_nothing_starts(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the marker directory should be")
    settings = fake_settings(tmp_path, marker_dir=blocked)
    async with Client(build_server(settings, env=env(tmp_path))) as client:
        result = await client.call_tool("run_skill", {"skill_command": "/make-plan 1", "cwd": str(tmp_path)})
    assert result.is_error
    message = text_of(result)
    assert "run_skill failed: " in message
    assert str(blocked) in message
    assert launched(tmp_path) == []
    store = SqliteCampaignStore(settings.state_path)
    try:
        assert store.list_runs() == []
    finally:
        store.close()


@pytest.mark.parametrize("tool", ["run_skill", "dispatch"])
async def test_a_nul_byte_in_cwd_is_refused_in_one_line(tmp_path: Path, tool: str) -> None:
    arguments: dict[str, Any] = (
        {"skill_command": "/make-plan 1"}
        if tool == "run_skill"
        else {"campaign": "c", "name": "j", "recipe": "diagnose", "inputs": {"problem": "p"}}
    )
    async with Client(build_server(fake_settings(tmp_path), env=env(tmp_path))) as client:
        result = await client.call_tool(tool, {**arguments, "cwd": f"{tmp_path}/a\x00b"})
    assert result.is_error
    assert "contains a NUL byte" in text_of(result)
    assert "\n" not in text_of(result).strip()
    assert launched(tmp_path) == []


async def test_a_dispatch_whose_threshold_is_out_of_bounds_is_refused_before_its_claim(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    arguments = {"campaign": "c", "name": "j", "recipe": "diagnose", "inputs": {"problem": "p"}, "cwd": str(tmp_path)}
    async with Client(build_server(settings, env=env(tmp_path))) as client:
        result = await client.call_tool("dispatch", {**arguments, "stale_threshold": 10 * 86400})
        recorded = await client.call_tool("list_dispatches", {"campaign": "c"})
    assert result.is_error
    assert "stale_threshold should be less than or equal to 86400 (got 864000)" in text_of(result)
    assert recorded.structured_content == {"jobs": []}
    assert launched(tmp_path) == []
