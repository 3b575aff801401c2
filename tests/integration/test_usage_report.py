"""Usage reports of real runs: sessions of the fake agent recorded by the supervisor in a SQLite store."""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import TextContent

from expeditor.executor import SessionKind
from expeditor.reports.aggregate import campaign_report
from expeditor.reports.render import render_markdown
from expeditor.runs import build_executor
from expeditor.runs.caller import CallerContext
from expeditor.runs.supervisor import RunContext, Supervisor
from expeditor.server.app import build_server
from expeditor.state import SqliteCampaignStore
from tests.support.fake import fake_settings, scenario_request

pytestmark = pytest.mark.anyio

CALLER = str(uuid.uuid4())
TWO_BLOCKS = {
    "assistant": {
        "content": [{"text": "Reading."}, {"tool_use": {"name": "Read", "input": {}}}],
        "usage": {"input": 11, "output": 7, "cache_read": 1000, "cache_write": 200},
    }
}
DONE = {"assistant": {"content": "Done.", "usage": {"input": 3, "output": 40, "cache_read": 1200, "cache_write": 0}}}


async def test_a_crash_and_its_retry_make_one_step_with_two_sessions_the_crash_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    settings = fake_settings(tmp_path)
    store = SqliteCampaignStore(settings.state_path)
    supervisor = Supervisor(settings, build_executor(settings), store=store)
    caller = CallerContext(session_id=None, kind=None)
    work = tmp_path / "work"  # not a git repository: lines changed are 0, measured without failing
    work.mkdir()
    launches: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        ("plan", {"steps": [TWO_BLOCKS, {"tool_result": "ok"}, DONE, {"result": {}}]}, {}),
        ("implement", {"steps": [TWO_BLOCKS], "exit_code": 1}, {}),
        ("implement", {"steps": [DONE, {"result": {}}]}, {"ANTHROPIC_BASE_URL": "http://127.0.0.1:9/v1"}),
    ]
    try:
        for label, scenario, env in launches:
            request = scenario_request(work, scenario, kind=SessionKind.SKILL, model="sonnet", env=env)
            await supervisor.run(request, caller, context=RunContext(campaign_id="c", job_name="j", label=label))
        report = campaign_report(store, "c")
    finally:
        store.close()
    plan, implement = report.steps
    assert (plan.step, plan.sessions, plan.partial, plan.non_anthropic) == ("plan", 1, False, False)
    assert (plan.usage.input_tokens, plan.usage.output_tokens, plan.usage.turns) == (14, 47, 2)
    assert (implement.step, implement.sessions, implement.partial, implement.non_anthropic) == (
        "implement",
        2,
        True,
        True,
    )
    assert (implement.usage.input_tokens, implement.usage.output_tokens) == (11 + 3, 7 + 40)
    assert plan.models == implement.models == ["claude-sonnet-4-5"]
    assert [row.loc_changed for row in report.efficiency] == [0, 0]
    markdown = render_markdown(report)
    assert "| implement\\*† | claude-sonnet-4-5 | 2 |" in markdown
    assert "API base URL http://127.0.0.1:9" in markdown


def orchestrator_scenario(cwd: Path) -> dict[str, Any]:
    run_skill = {"skill_command": "/expeditor:diagnose-problem work flaky-cache", "cwd": str(cwd)}
    return {
        "steps": [
            {"assistant": "Running the diagnosis step."},
            {"call_tool": {"server": "expeditor", "tool": "run_skill", "arguments": run_skill, "timeout": 60}},
            DONE,
            {"result": {}},
        ]
    }


def text_of(result: Any) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


async def test_token_report_covers_a_dispatched_job_and_the_skills_its_orchestrator_ran(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CLAUDE_CODE_SESSION_ID": CALLER,
        "EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR": json.dumps(orchestrator_scenario(tmp_path)),
        "EXPEDITOR_FAKE_SCENARIO_SKILL": json.dumps({"steps": [TWO_BLOCKS, {"result": {}}]}),
    }
    dispatch = {"campaign": "release-7", "name": "diagnose-cache", "recipe": "diagnose", "inputs": {"problem": "x"}}
    async with Client(build_server(fake_settings(tmp_path), env=env)) as client:
        dispatched = await client.call_tool("dispatch", {**dispatch, "cwd": str(tmp_path)})
        assert not dispatched.is_error, text_of(dispatched)
        assert text_of(dispatched).count("usage:") == 1  # the job's, its skill included: said once
        as_markdown = await client.call_tool("token_report", {"campaign": "release-7"})
        as_json = await client.call_tool(
            "token_report", {"campaign": "release-7", "job_name": "diagnose-cache", "format": "json"}
        )
        # The argument's name before this release, still accepted for one.
        by_old_name = await client.call_tool("token_report", {"campaign_id": "release-7"})
        unknown = await client.call_tool("token_report", {"campaign": "release-8"})
    assert not as_markdown.is_error, text_of(as_markdown)
    (block,) = as_markdown.content
    assert isinstance(block, TextContent)
    assert block.text.startswith("## Token Usage Summary\n")
    report = as_markdown.structured_content
    assert report is not None
    steps = {row["step"]: row for row in report["steps"]}
    assert len(steps) == 2
    skill = steps["/expeditor:diagnose-problem"]
    assert (skill["sessions"], skill["usage"]["cache_read_tokens"]) == (1, 1000)
    assert report["total"]["sessions"] == 2
    assert datetime.fromisoformat(skill["started_at"]).tzinfo is not None
    assert json.loads(text_of(as_json)) == {**report, "job_name": "diagnose-cache"}
    assert by_old_name.structured_content == report
    assert unknown.is_error
    assert "no agent sessions recorded for campaign 'release-8'" in text_of(unknown)
