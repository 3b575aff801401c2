"""Interactive Claude Code (the real CLI, in a terminal) runs a long run_skill as a background MCP task.

Claude Code runs in a tmux pane with a pre-seeded config directory (onboarding done, the project
trusted, the API key approved) against the scripted Messages API. The call lasts longer than Claude
Code's 30 s idle check with a 5 s tool idle timeout, and the server's progress interval is longer
than the call, so no progress flows: only the task's polls keep it alive. Its result reaches the
model as a task notification, a third request of the main conversation. The headless twin (``claude -p``
never declares tasks, so the same call blocks and lives on progress) is
``test_real_claude_server.py::test_a_run_skill_longer_than_the_callers_idle_timeout_lives_on_progress``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Generator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil
import pytest

from expeditor.state import SqliteCampaignStore
from tests.support.fake import FAKE_AGENT_COMMAND
from tests.support.scripted_messages_api import RecordedRequest, Reply, ScriptedMessagesAPI, ToolUse

pytestmark = [pytest.mark.real_claude, pytest.mark.slow]

RUN_SKILL = "mcp__expeditor__run_skill"
SKILL_SECONDS = 45.0
IDLE_TIMEOUT_MS = 5000
ANSWER = "the long skill finished"
BOUND = SKILL_SECONDS + 60
EXIT_BOUND = 15.0
# Its key must be approved in the config, or the terminal asks whether to use it.
API_KEY = "sk-ant-test-key-for-the-scripted-api"


def server_config(tmp_path: Path) -> dict[str, Any]:
    scenario = {
        "steps": [
            {"tick": {"interval": 0.5, "duration": SKILL_SECONDS, "to": "both"}},
            {"assistant": ANSWER},
            {"result": {}},
        ]
    }
    env = {
        "EXPEDITOR_HOME": str(tmp_path / "expeditor-home"),
        "EXPEDITOR_CLAUDE_COMMAND": FAKE_AGENT_COMMAND,
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
        "EXPEDITOR_PROGRESS_INTERVAL": "600",  # longer than the call: no progress at all
        "EXPEDITOR_TASK_POLL_INTERVAL": "1",
        "EXPEDITOR_POLL_INTERVAL": "0.1",
        "EXPEDITOR_CHILDREN_INTERVAL": "0.5",
        "EXPEDITOR_KILL_GRACE": "0.5",
        "EXPEDITOR_FAKE_SCENARIO": json.dumps(scenario),
    }
    server = {"type": "stdio", "command": sys.executable, "args": ["-m", "expeditor", "serve"], "env": env}
    return {"mcpServers": {"expeditor": server}}


def seed_config(config_dir: Path, project: Path) -> None:
    """What a person's first start would have asked: onboarding, trusting the project, using the key."""
    seeded = {
        "hasCompletedOnboarding": True,
        "theme": "dark",
        "numStartups": 5,
        "customApiKeyResponses": {"approved": [API_KEY[-20:]], "rejected": []},
        "projects": {str(project): {"hasTrustDialogAccepted": True, "hasCompletedProjectOnboarding": True}},
    }
    (config_dir / ".claude.json").write_text(json.dumps(seeded))


@contextmanager
def terminal(session: str, cwd: Path, env: dict[str, str], argv: list[str]) -> Generator[None]:
    """``argv`` in a detached tmux pane, with exactly ``env``; the pane is closed after, whatever happened."""
    command = ["env", "-i", *(f"{key}={value}" for key, value in env.items()), *argv]
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "50", "-c", str(cwd), *command], check=True
    )
    shown = subprocess.run(
        ["tmux", "display-message", "-p", "-t", session, "#{pane_pid}"], capture_output=True, text=True, check=True
    )
    claude = psutil.Process(int(shown.stdout))  # env -i execs the CLI: the pane's process is Claude Code
    try:
        yield
    finally:
        family = [claude]
        with suppress(psutil.Error):
            family += claude.children(recursive=True)
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, check=False)
        # Closing the terminal hangs Claude Code up; it stops its MCP server, which stops its runs.
        _, alive = psutil.wait_procs(family, timeout=EXIT_BOUND)
        for process in alive:
            with suppress(psutil.Error):
                process.kill()
        assert alive == [], f"still alive {EXIT_BOUND} s after the terminal closed: {alive}"


def tool_results(request: RecordedRequest) -> list[dict[str, Any]]:
    """Every tool_result block of a request (2.1.332 may put a system message after the one that holds them)."""
    messages: Any = (request.body or {}).get("messages") or []
    return [
        block
        for message in messages
        if isinstance(message, dict) and isinstance(message.get("content"), list)
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]


def pane(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def test_interactive_claude_code_runs_a_long_run_skill_as_a_background_task(
    claude_cli: Path,
    scripted_api: ScriptedMessagesAPI,
    claude_env: dict[str, str],
    claude_config_dir: Path,
    tmp_path: Path,
) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is needed to run Claude Code in a terminal")
    project = (tmp_path / "project").resolve()
    project.mkdir()
    seed_config(claude_config_dir, project)
    (tmp_path / "mcp.json").write_text(json.dumps(server_config(tmp_path)))
    scripted_api.add(
        Reply((ToolUse(RUN_SKILL, {"skill_command": "/long-skill", "cwd": str(project)}),)),
        Reply.text("The skill runs in the background."),
        Reply.text("The background skill is done."),
    )
    env = {
        **claude_env,
        "ANTHROPIC_API_KEY": API_KEY,
        "TERM": "xterm-256color",
        "CLAUDE_CODE_MCP_TOOL_IDLE_TIMEOUT": str(IDLE_TIMEOUT_MS),
    }
    argv = [str(claude_cli), "--mcp-config", str(tmp_path / "mcp.json"), "--strict-mcp-config"]
    argv += ["--allowedTools", RUN_SKILL, "--", "Run the long skill."]
    session = f"expeditor-tasks-{uuid.uuid4().hex[:8]}"
    seen_running = False
    with terminal(session, project, env, argv):
        deadline = time.monotonic() + BOUND
        while len(scripted_api.main_requests) < 3:
            screen = pane(session)
            seen_running = seen_running or "MCP task still running" in screen or "1 MCP task" in screen
            assert time.monotonic() < deadline, f"no task notification within {BOUND} s:\n{screen}"
            time.sleep(0.5)  # a terminal screen and another process's requests: no event to wait on
        screen = pane(session)
    _, second, third = scripted_api.main_requests
    assert seen_running, screen
    [moved] = tool_results(second)
    moved_text = json.dumps(moved)
    assert "background" in moved_text, moved_text
    assert "task-notification" in third.text, third.text[-2000:]
    assert ANSWER in third.text, third.text[-2000:]
    assert "completed" in third.text
    store = SqliteCampaignStore(tmp_path / "expeditor-home" / "state.sqlite3")
    try:
        runs = store.list_runs()
    finally:
        store.close()
    assert [run.status.value for run in runs] == ["success"]
