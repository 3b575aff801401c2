"""Bad input is refused with a clear message and leaves no record, process or marker behind."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from mcp import Client
from mcp.types import TextContent

from expeditor.errors import InvalidInput
from expeditor.executor import RunRequest
from expeditor.recipes.run import RecipeRun, run_recipe
from expeditor.runs import build_executor
from expeditor.runs.caller import CallerContext
from expeditor.runs.supervisor import Supervisor
from expeditor.server.app import build_server
from expeditor.state import SqliteCampaignStore
from tests.support.fake import fake_settings

pytestmark = pytest.mark.anyio


async def test_a_run_outside_the_allowed_roots_is_refused_before_it_is_recorded(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    store = SqliteCampaignStore(settings.state_path)
    try:
        supervisor = Supervisor(settings, build_executor(settings), store=store)
        with pytest.raises(InvalidInput, match="outside the allowed roots"):
            await supervisor.run(RunRequest(prompt="/x", cwd=Path("/")), CallerContext(None, None))
        assert store.list_runs() == []
        assert supervisor.live == {}
    finally:
        store.close()


async def test_a_dispatch_into_a_missing_directory_claims_nothing(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    env = {**os.environ, "CLAUDE_CODE_SESSION_ID": str(uuid.uuid4())}
    async with Client(build_server(settings, env=env)) as client:
        arguments = {"campaign": "c", "name": "j", "recipe": "demo", "inputs": {}, "cwd": str(tmp_path / "missing")}
        refused = await client.call_tool("dispatch", arguments)
        assert refused.is_error
        text = " ".join(block.text for block in refused.content if isinstance(block, TextContent))
        assert "does not exist" in text
    store = SqliteCampaignStore(settings.state_path)
    try:
        assert store.list("c") == []
        assert store.list_runs() == []
    finally:
        store.close()
    assert not list(settings.markers_path.glob("*.marker"))


def test_recipe_run_outside_the_allowed_roots_records_nothing(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    with pytest.raises(InvalidInput, match="outside the allowed roots"):
        run_recipe(settings, RecipeRun(recipe="demo", inputs={}, campaign_id="c", cwd=Path("/")))
    # Refused before the store was opened: nothing was claimed, so nothing can be left running.
    assert not settings.state_path.exists()


async def test_a_prompt_too_long_for_the_cli_fails_the_dispatch_saying_why(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    env = {**os.environ, "CLAUDE_CODE_SESSION_ID": str(uuid.uuid4())}
    async with Client(build_server(settings, env=env)) as client:
        huge = {"problem": "a" * 140_000}
        arguments = {"campaign": "c", "name": "j", "recipe": "diagnose", "inputs": huge, "cwd": str(tmp_path)}
        refused = await client.call_tool("dispatch", arguments)
        assert refused.is_error
    store = SqliteCampaignStore(settings.state_path)
    try:
        record = store.get("c", "j")
        assert record is not None
        assert record.status.value == "failure"
        assert "expected at most" in (record.error or "")
        assert store.list_runs() == []
    finally:
        store.close()
