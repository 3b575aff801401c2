"""The executor the product uses, running the real Claude Code CLI against the scripted Messages API."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from expeditor.claude_paths import transcript_path
from expeditor.config import Settings
from expeditor.executor import RunRequest, RunResult, Termination
from expeditor.runs import build_executor
from expeditor.usage import UsageSource
from tests.support.scripted_messages_api import Reply, ScriptedMessagesAPI, Text, ToolUse, Usage

pytestmark = [pytest.mark.anyio, pytest.mark.real_claude]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = (tmp_path / "project.one").resolve()
    path.mkdir()
    return path


def marker_dir_of(settings: Settings) -> Path:
    markers = settings.markers_path
    markers.mkdir(parents=True, exist_ok=True)
    return markers


def assert_usage_is(result: RunResult, usage: Usage, *, turns: int, peak_context: int) -> None:
    total = result.usage.total
    assert result.usage.source is UsageSource.RESULT_EVENT
    assert result.usage.partial is False
    assert total.input_tokens == usage.input_tokens
    assert total.output_tokens == usage.output_tokens
    assert total.cache_read_tokens == usage.cache_read_input_tokens
    assert total.cache_write_tokens == usage.cache_creation_input_tokens
    assert total.turns == turns
    assert total.peak_context == peak_context
    [per_model] = result.usage.by_model.values()
    assert (per_model.input_tokens, per_model.output_tokens) == (usage.input_tokens, usage.output_tokens)


def assert_completed(result: RunResult, *, session_id: str, text: str) -> None:
    assert result.success, result.reason
    assert result.termination is Termination.COMPLETED
    assert result.is_error is False
    assert result.exit_code == 0
    assert result.result_text == text
    assert result.session_id == session_id
    assert result.killed == []


async def test_a_one_turn_session_of_the_real_cli_is_a_completed_run_with_the_api_figures(
    settings: Settings,
    scripted_api: ScriptedMessagesAPI,
    claude_env: dict[str, str],
    claude_config_dir: Path,
    workdir: Path,
) -> None:
    usage = Usage(11, 7, 1000, 200)
    scripted_api.add(Reply.text("Plan written.", usage))
    session_id = str(uuid.uuid4())
    executor = build_executor(settings, env=claude_env)

    result = await executor.run(
        RunRequest(prompt="/make-plan 42", cwd=workdir, session_id=session_id),
        marker_dir=None,
        caller_session_id=None,
    )

    assert_completed(result, session_id=session_id, text="Plan written.")
    assert_usage_is(result, usage, turns=1, peak_context=1211)
    assert result.transcript_path == transcript_path(claude_config_dir, workdir, session_id)
    assert result.transcript_path is not None
    assert result.transcript_path.is_file()
    [request] = scripted_api.main_requests
    # /make-plan is a bundled skill (as /expeditor:make-plan): the CLI expands it, keeping the arguments.
    assert "<command-args>42</command-args>" in request.text
    assert request.headers["x-claude-code-session-id"] == session_id


async def test_a_tool_using_session_of_the_real_cli_sums_both_replies(
    settings: Settings,
    scripted_api: ScriptedMessagesAPI,
    claude_env: dict[str, str],
    claude_config_dir: Path,
    workdir: Path,
) -> None:
    first, second = Usage(11, 7, 1000, 200), Usage(13, 5, 1200, 30)
    scripted_api.add(
        Reply((Text("Checking."), ToolUse("Bash", {"command": "echo hi", "description": "Say hi"})), first),
        Reply.text("It printed hi.", second),
    )
    session_id = str(uuid.uuid4())
    executor = build_executor(settings, env=claude_env)

    result = await executor.run(
        RunRequest(prompt="say hi", cwd=workdir, session_id=session_id, allowed_tools=("Bash",)),
        marker_dir=marker_dir_of(settings),
        caller_session_id="caller-1",
    )

    assert_completed(result, session_id=session_id, text="It printed hi.")
    assert result.caller_session_id == "caller-1"
    assert_usage_is(result, first + second, turns=2, peak_context=13 + 1200 + 30)
    assert result.transcript_path == transcript_path(claude_config_dir, workdir, session_id)
    assert result.transcript_path is not None
    assert result.transcript_path.is_file()
    requests = scripted_api.main_requests
    assert len(requests) == 2
    assert "hi" in requests[1].text
