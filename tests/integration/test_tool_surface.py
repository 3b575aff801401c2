"""What a model meets over stdio: the tools' schemas, their result text, and their errors (issue 25 item 3).

One real `expeditor serve` subprocess per test, driven by a real MCP client, as Claude Code drives it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, TextContent

from expeditor.executor import SessionKind
from expeditor.runs import build_executor
from expeditor.runs.caller import CallerContext
from expeditor.runs.supervisor import RunContext, Supervisor
from expeditor.state import SqliteCampaignStore
from tests.support.fake import FAKE_AGENT_COMMAND, fake_settings, scenario_request

pytestmark = pytest.mark.anyio

READ_TOOLS = {"list_sessions", "list_recipes", "get_dispatch", "list_dispatches", "token_report", "validate_recipe"}
DONE = {"steps": [{"assistant": "Done."}, {"result": {}}]}


def settings_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "EXPEDITOR_HOME": str(tmp_path / "home"),
        "EXPEDITOR_CLAUDE_COMMAND": FAKE_AGENT_COMMAND,
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
        "EXPEDITOR_FAKE_SCENARIO": json.dumps(DONE),
        **extra,
    }


@asynccontextmanager
async def stdio_client(tmp_path: Path, **extra: str) -> AsyncGenerator[Client]:
    parameters = StdioServerParameters(
        command=sys.executable, args=["-m", "expeditor", "serve"], env=settings_env(tmp_path, **extra)
    )
    async with Client(parameters) as client:
        yield client


def text_of(result: CallToolResult) -> str:
    """The one text block a result carries."""
    (block,) = result.content
    assert isinstance(block, TextContent)
    return block.text


def assert_one_clean_line(text: str, *needles: str) -> None:
    assert "\n" not in text.strip(), text
    assert "pydantic" not in text.lower(), text
    assert "http" not in text, text
    assert "Value error" not in text, text
    for needle in needles:
        assert needle in text, text


async def test_every_tool_is_described_titled_and_annotated(tmp_path: Path) -> None:
    async with stdio_client(tmp_path) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert READ_TOOLS | {"run_skill", "dispatch", "cancel_session"} == set(tools)
    for name, tool in tools.items():
        assert tool.title, name
        assert tool.annotations is not None, name
        assert tool.description, name
        indented = [line for line in tool.description.splitlines() if line.startswith("  ")]
        assert indented == [], (name, indented)
        undescribed = [key for key, schema in tool.input_schema["properties"].items() if not schema.get("description")]
        assert undescribed == [], (name, undescribed)
        assert tool.output_schema is not None, name
        assert (tool.annotations.read_only_hint is True) == (name in READ_TOOLS), name
    assert tools["cancel_session"].annotations is not None
    assert tools["cancel_session"].annotations.destructive_hint is True
    # One name for the campaign argument everywhere.
    for name in ("dispatch", "get_dispatch", "list_dispatches", "token_report"):
        assert "campaign" in tools[name].input_schema["required"], name
    # Bounds are in the schema, where the model reads them.
    stale = tools["run_skill"].input_schema["properties"]["stale_threshold"]
    assert any(option.get("exclusiveMinimum") == 0 for option in stale["anyOf"]), stale
    # Times are ISO 8601 strings in the output schema.
    output_schema = tools["run_skill"].output_schema
    assert output_schema is not None
    started = output_schema["properties"]["started_at"]
    assert any(option.get("format") == "date-time" for option in started["anyOf"]), started


async def test_results_read_at_a_glance_and_errors_are_one_line(tmp_path: Path) -> None:
    async with stdio_client(tmp_path) as client:
        sessions = await client.call_tool("list_sessions", {})
        jobs = await client.call_tool("list_dispatches", {"campaign": "nothing-yet"})
        ran = await client.call_tool("run_skill", {"skill_command": "/make-plan 1", "cwd": str(tmp_path)})
        bad_enum = await client.call_tool("list_dispatches", {"campaign": "c", "status": "finished"})
        bad_format = await client.call_tool("token_report", {"campaign": "c", "format": "yaml"})
        typo = await client.call_tool("run_skill", {"skill_command": "/x", "cwd": str(tmp_path), "model": "sonet"})
        out_of_bounds = await client.call_tool(
            "run_skill", {"skill_command": "/x", "cwd": str(tmp_path), "timeout": -5}
        )
    assert not sessions.is_error
    assert text_of(sessions) == "no sessions running"
    assert sessions.structured_content == {"sessions": []}
    assert text_of(jobs) == "no jobs recorded in campaign 'nothing-yet'"
    assert jobs.structured_content == {"jobs": []}

    assert not ran.is_error, text_of(ran)
    assert text_of(ran).startswith("succeeded: completed")
    assert text_of(ran).endswith("\nDone.")
    assert text_of(ran).count("usage:") == 1
    result = ran.structured_content
    assert result is not None
    started, ended = (datetime.fromisoformat(result[key]) for key in ("started_at", "ended_at"))
    assert started.utcoffset() is not None
    assert started <= ended
    assert all(datetime.fromisoformat(moment) <= ended for moment in result["last_moved"].values())

    for refused in (bad_enum, bad_format, typo, out_of_bounds):
        assert refused.is_error
    assert_one_clean_line(text_of(bad_enum), "status should be 'pending', 'running'", "(got 'finished')")
    assert_one_clean_line(text_of(bad_format), "format should be 'markdown' or 'json' (got 'yaml')")
    assert_one_clean_line(text_of(typo), "model 'sonet' is not known: expected one of sonnet, opus, haiku")
    assert_one_clean_line(text_of(out_of_bounds), "timeout should be greater than 0 (got -5)")


async def test_a_missing_agent_binary_is_an_error_with_the_way_out(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-claude"
    async with stdio_client(tmp_path, EXPEDITOR_CLAUDE_COMMAND=str(missing)) as client:
        result = await client.call_tool("run_skill", {"skill_command": "/make-plan 1", "cwd": str(tmp_path)})
    assert result.is_error
    text = text_of(result)
    assert str(missing) in text
    assert "EXPEDITOR_CLAUDE_COMMAND" in text
    assert "npm install -g @anthropic-ai/claude-code" in text
    assert result.structured_content is not None
    assert result.structured_content["termination"] == "launch_failed"


async def test_token_report_text_is_the_markdown_and_the_report_is_structured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    settings = fake_settings(tmp_path)
    store = SqliteCampaignStore(settings.state_path)
    try:
        supervisor = Supervisor(settings, build_executor(settings), store=store)
        request = scenario_request(tmp_path, DONE, kind=SessionKind.SKILL, model="sonnet")
        context = RunContext(campaign_id="release-7", job_name="j", label="plan")
        await supervisor.run(request, CallerContext(session_id=None, kind=None), context=context)
    finally:
        store.close()
    with sqlite3.connect(settings.state_path) as raw:  # results show ISO times; the store keeps epoch numbers
        assert raw.execute("SELECT typeof(started_at), typeof(finished_at) FROM runs").fetchall() == [("real", "real")]
    async with stdio_client(tmp_path) as client:
        report = await client.call_tool("token_report", {"campaign": "release-7"})
        as_json = await client.call_tool("token_report", {"campaign": "release-7", "format": "json"})
    assert not report.is_error, text_of(report)
    assert text_of(report).startswith("## Token Usage Summary\n")
    assert report.structured_content is not None
    (step,) = report.structured_content["steps"]
    assert step["step"] == "plan"
    assert json.loads(text_of(as_json)) == report.structured_content


def test_the_cli_report_speaks_the_same_formats(tmp_path: Path) -> None:
    def report(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "expeditor", "report", "nothing", *args],
            env=settings_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    markdown, short, wrong = report("--format", "markdown"), report("--format", "md"), report("--format", "yaml")
    assert (markdown.returncode, short.returncode) == (1, 1)  # nothing recorded: said in the chosen format
    assert markdown.stdout == short.stdout
    assert wrong.returncode == 2
    (error,) = [line for line in wrong.stderr.splitlines() if "error" in line]
    assert "argument --format: invalid choice: 'yaml'" in error
    assert "'markdown', 'json', 'table'" in error


def test_the_cli_refuses_a_model_typo_in_the_tools_words(tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "expeditor", "run-skill", "/make-plan 1", "--cwd", str(tmp_path), "--model", "sonet"],
        env=settings_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert_one_clean_line(refused.stderr, "expeditor: invalid input: model 'sonet' is not known: expected one of")
