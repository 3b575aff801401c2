"""The real Claude Code CLI runs offline against the scripted Messages API: the harness itself."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.scripted_messages_api import Reply, ScriptedMessagesAPI, Text, ToolUse, Usage

pytestmark = pytest.mark.real_claude


def transcript_path(config_dir: Path, cwd: Path, session_id: str) -> Path:
    return config_dir / "projects" / re.sub(r"[^A-Za-z0-9]", "-", str(cwd)) / f"{session_id}.jsonl"


def run_claude(cli: Path, env: dict[str, str], cwd: Path, *args: str) -> list[dict[str, Any]]:
    """Run ``claude -p`` with stream-json output; return its events, failing loudly on a bad exit."""
    command = [str(cli), "--output-format", "stream-json", "--verbose", *args]
    done = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"claude exited {done.returncode}: {done.stderr}\n{done.stdout}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def result_usage(event: dict[str, Any]) -> Usage:
    usage = event["usage"]
    return Usage(
        usage["input_tokens"],
        usage["output_tokens"],
        usage["cache_read_input_tokens"],
        usage["cache_creation_input_tokens"],
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = (tmp_path / "work dir.x").resolve()
    path.mkdir()
    return path


def test_a_one_turn_text_reply_comes_back_as_the_result_with_the_scripted_usage(
    claude_cli: Path,
    scripted_api: ScriptedMessagesAPI,
    claude_env: dict[str, str],
    claude_config_dir: Path,
    workdir: Path,
) -> None:
    usage = Usage(11, 7, 1000, 200)
    scripted_api.add(Reply.text("hello from the script", usage))
    session_id = str(uuid.uuid4())

    events = run_claude(claude_cli, claude_env, workdir, "--session-id", session_id, "-p", "hi")

    init, result = events[0], events[-1]
    assert (init["type"], init["subtype"], init["session_id"]) == ("system", "init", session_id)
    assert result["type"] == "result"
    assert result["subtype"] == "success"
    assert result["is_error"] is False
    assert result["result"] == "hello from the script"
    assert result["session_id"] == session_id
    assert result["num_turns"] == 1
    assert result_usage(result) == usage
    assert transcript_path(claude_config_dir, workdir, session_id).is_file()
    [main] = scripted_api.main_requests
    assert main.path == "/v1/messages"
    assert main.query == {"beta": "true"}
    assert "hi" in main.text
    assert scripted_api.remaining == 0


def test_a_tool_using_run_sums_both_replies_and_streams_one_event_per_block(
    claude_cli: Path,
    scripted_api: ScriptedMessagesAPI,
    claude_env: dict[str, str],
    claude_config_dir: Path,
    workdir: Path,
) -> None:
    first = Usage(11, 7, 1000, 200)
    second = Usage(13, 5, 1200, 30)
    scripted_api.add(
        Reply((Text("Running it."), ToolUse("Bash", {"command": "echo hi", "description": "Say hi"})), first),
        Reply.text("The command printed hi.", second),
    )
    session_id = str(uuid.uuid4())

    events = run_claude(
        claude_cli, claude_env, workdir, "--session-id", session_id, "--allowedTools", "Bash", "-p", "say hi"
    )

    result = events[-1]
    assert result["subtype"] == "success"
    assert result["result"] == "The command printed hi."
    assert result["num_turns"] == 2
    assert result["permission_denials"] == []
    assert result_usage(result) == first + second
    assistant = [event["message"] for event in events if event["type"] == "assistant"]
    assert [[block["type"] for block in message["content"]] for message in assistant] == [
        ["text"],
        ["tool_use"],
        ["text"],
    ]
    assert assistant[0]["id"] == assistant[1]["id"] != assistant[2]["id"]
    tool_results = [
        block
        for event in events
        if event["type"] == "user"
        for block in event["message"]["content"]
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]
    assert [(block["content"], block["is_error"]) for block in tool_results] == [("hi", False)]
    assert len(scripted_api.main_requests) == 2
    assert "hi" in scripted_api.main_requests[1].text
    assert transcript_path(claude_config_dir, workdir, session_id).is_file()
