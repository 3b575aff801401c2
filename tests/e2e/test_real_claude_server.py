"""The MCP server with the real Claude Code CLI on both sides of it: as the sessions it launches, and as its caller.

The three-level regression (tests/integration/test_dispatch.py with the fake agent) again, with the
real CLI at levels 2 and 3: a client dispatches the bundled ``diagnose`` recipe on a server with a
small stale threshold; the dispatched orchestrator (real claude) calls ``run_skill`` on the nested
``expeditor serve`` that Claude Code starts from the generated ``--mcp-config``; the skill session
(real claude) waits on a slow model reply several times the orchestrator's threshold. The marker the
nested server holds keeps the silent orchestrator alive; without markers it is killed as stale.

Then the real CLI as the caller of ``expeditor serve`` with a low ``CLAUDE_CODE_MCP_TOOL_IDLE_TIMEOUT``:
a 40 s ``run_skill`` completes because the server sends progress, and is aborted by Claude Code when
the server's progress interval is longer than the call.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Generator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import TextContent

from expeditor.config import Settings, load_settings
from expeditor.server.app import build_server
from expeditor.state import SqliteCampaignStore
from tests.support.fake import FAKE_AGENT_COMMAND
from tests.support.scripted_messages_api import (
    Reply,
    ScriptedMessagesAPI,
    Text,
    ToolUse,
    mentions,
)

pytestmark = pytest.mark.real_claude

CALLER = str(uuid.uuid4())
ORCHESTRATOR_THRESHOLD = 5.0
"""Four times the orchestrator's start-up (about 1.2 s from launch to its first request here; up to 3.9 s with
four of these tests running at once on two cores)."""
SKILL_DELAY = 15.0
"""How long the scripted model takes to answer the skill session: three times the orchestrator's threshold."""
DISPATCH_BOUND = 60.0
RUN_SKILL = "mcp__expeditor__run_skill"
ORCHESTRATOR = "orchestrator"
SKILL = "skill"
SKILL_COMMAND = "/expeditor:diagnose-problem .expeditor/work flaky cache"
SKILL_ANSWER = "root_cause=cache eviction race\nconfidence=high"
DISPATCH: dict[str, Any] = {
    "campaign": "release-7",
    "name": "diagnose-cache",
    "recipe": "diagnose",
    "inputs": {"problem": "flaky cache"},
}


# Every process the test process starts, whatever starts it: the proof that a call launched nothing.
_SPAWN_EVENTS = frozenset({"subprocess.Popen", "os.posix_spawn", "os.exec", "os.spawn", "os.system", "os.fork"})
_spawn_recorders: list[list[str]] = []
_spawn_hook_installed = False


def _record_spawn(event: str, args: tuple[Any, ...]) -> None:
    if event in _SPAWN_EVENTS:
        for recorder in _spawn_recorders:
            recorder.append(f"{event} {args[:2]!r}")


@contextmanager
def spawns_recorded() -> Generator[list[str]]:
    """Collect every process start of this process (audit events) during the ``with`` block."""
    global _spawn_hook_installed
    if not _spawn_hook_installed:
        sys.addaudithook(_record_spawn)  # audit hooks cannot be removed: one for the whole run, idle when unused
        _spawn_hook_installed = True
    recorded: list[str] = []
    _spawn_recorders.append(recorded)
    try:
        yield recorded
    finally:
        _spawn_recorders.remove(recorded)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = (tmp_path / "project").resolve()
    path.mkdir()
    return path


def text_of(result: Any) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


def tool_result_text(block: Mapping[str, Any]) -> str:
    """A tool_result's content as one string (the CLI sends a string or a list of text blocks)."""
    content = block.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def transcripts(config_dir: Path) -> set[Path]:
    return set((config_dir / "projects").glob("*/*.jsonl"))


# 1. The three-level regression with the real CLI at levels 2 and 3.


def dispatch_settings(claude_cli: Path, claude_config_dir: Path, tmp_path: Path, *, markers_enabled: bool) -> Settings:
    return load_settings(
        home=tmp_path / "expeditor-home",
        claude_command=str(claude_cli),
        claude_config_dir=claude_config_dir,
        allowed_roots=(tmp_path,),
        stale_threshold=ORCHESTRATOR_THRESHOLD,  # the dispatched orchestrator's threshold
        timeout=DISPATCH_BOUND,
        dispatch_timeout=DISPATCH_BOUND,
        poll_interval=0.1,
        children_interval=0.5,
        # Over 0.5 s samples the idle tree is noisy: CPU time advances in 10 ms ticks, and a claude that
        # waits on a tool call or on its model burns 0.1-0.14 cores in one sample every ~6.5 s. At the
        # default floor (0.05) or even 0.15 that splits the orchestrator's silence. A starting claude or
        # server uses 0.3-1 core, so this floor still counts start-up and leaves the marker as the only
        # thing that vouches for the orchestrator while the skill waits on its model.
        children_cpu_floor=0.25,
        marker_heartbeat_interval=0.5,
        kill_grace=0.5,
        markers_enabled=markers_enabled,
    )


def script_three_levels(api: ScriptedMessagesAPI, project: Path) -> None:
    """Orchestrator: call run_skill, then report. Skill: answer after SKILL_DELAY. Each session on its own route."""
    api.route(
        ORCHESTRATOR,
        mentions("You are the orchestrator of the expeditor recipe 'diagnose'"),
        Reply(
            (
                Text("Running the investigate step."),
                ToolUse(RUN_SKILL, {"skill_command": SKILL_COMMAND, "cwd": str(project), "stale_threshold": 60}),
            )
        ),
        Reply.text(f"investigate: success\n{SKILL_ANSWER}\nrecipe_outcome=success"),
    )
    # The skill's first request carries the expanded SKILL.md; the orchestrator's only mentions the skill.
    api.route(
        SKILL,
        mentions("<command-name>/expeditor:diagnose-problem</command-name>"),
        Reply.text(SKILL_ANSWER, delay=SKILL_DELAY),
    )


@pytest.mark.anyio
@pytest.mark.parametrize("markers_enabled", [True, False], ids=["markers", "no-markers"])
async def test_a_real_orchestrator_waiting_on_a_real_skill_session_is_not_killed(
    claude_cli: Path,
    scripted_api: ScriptedMessagesAPI,
    claude_env: dict[str, str],
    claude_config_dir: Path,
    tmp_path: Path,
    project: Path,
    markers_enabled: bool,
) -> None:
    settings = dispatch_settings(claude_cli, claude_config_dir, tmp_path, markers_enabled=markers_enabled)
    script_three_levels(scripted_api, project)
    env = {**claude_env, "EXPEDITOR_SESSION_ID": CALLER}  # children inherit the offline CLI environment
    arguments = {**DISPATCH, "cwd": str(project)}
    async with Client(build_server(settings, env=env)) as client:
        with spawns_recorded() as launched, anyio.fail_after(DISPATCH_BOUND + 30):
            first = await client.call_tool("dispatch", arguments)
        assert any(str(claude_cli) in launch for launch in launched)  # the recorder sees what the server starts
        assert not first.is_error, text_of(first)
        outcome = first.structured_content
        assert outcome is not None
        run = outcome["result"]
        assert run is not None, outcome["message"]
        assert run["caller_session_id"] == CALLER
        orchestrator_requests = scripted_api.requests_of(ORCHESTRATOR)
        assert {r.session_id for r in orchestrator_requests} == {outcome["dispatched_session_id"]}, (
            run["reason"],
            [
                (
                    round(r.received_at - datetime.fromisoformat(run["started_at"]).timestamp(), 2),
                    r.route,
                    r.session_id,
                    type(r.answer).__name__,
                    r.text[:300],
                )
                for r in scripted_api.requests
            ],
            run["stderr_tail"],
        )
        if not markers_enabled:
            # The proof that the marker is what kept it alive: without it the silent orchestrator is killed.
            assert outcome["status"] == "failure", outcome["message"]
            assert run["termination"] == "stale", run["reason"]
            assert run["suppressed_s"] == 0
            assert len(orchestrator_requests) == 1  # killed while its run_skill was in flight
            return

        assert outcome["status"] == "success", outcome["message"]
        assert run["termination"] == "completed", run["reason"]
        assert run["success"] is True
        assert run["killed"] == []
        assert run["duration_s"] > SKILL_DELAY
        # Silent past its threshold while the skill's model took SKILL_DELAY, held by the marker (without
        # markers the same silence kills it: the other parameter). About SKILL_DELAY - threshold here.
        assert run["suppressed_s"] > 0, run
        assert {s["marker"].split("-in-progress-")[0] for s in run["suppressed_by"]} == {"run-skill"}
        assert all(f"-in-progress-{run['session_id']}-" in s["marker"] for s in run["suppressed_by"])
        assert "recipe_outcome=success" in run["result_text"]

        # Level 3 answered level 2: the skill's RunResult is the tool_result of the orchestrator's second turn.
        [skill_request] = scripted_api.requests_of(SKILL)
        assert skill_request.session_id not in (None, run["session_id"])
        assert len(orchestrator_requests) == 2
        [returned] = orchestrator_requests[1].tool_results
        skill_result = json.loads(tool_result_text(returned))
        assert returned.get("is_error") in (None, False)
        assert skill_result["success"] is True
        assert skill_result["result_text"] == SKILL_ANSWER
        assert skill_result["session_id"] == skill_request.session_id
        assert skill_result["caller_session_id"] == run["session_id"]
        assert skill_result["killed"] == []
        assert list(settings.markers_path.glob("*.marker")) == []

        # A repeat dispatch returns the recorded success: no API request, no process, no transcript.
        requests_before, transcripts_before = len(scripted_api.requests), transcripts(claude_config_dir)
        with spawns_recorded() as spawned, anyio.fail_after(10):
            second = await client.call_tool("dispatch", arguments)
        repeat = second.structured_content
        assert repeat is not None, text_of(second)
        assert repeat["short_circuited"] is True
        assert repeat["inputs_changed"] is False
        assert repeat["result"] is None
        assert (repeat["dispatch_id"], repeat["dispatched_session_id"]) == (
            outcome["dispatch_id"],
            outcome["dispatched_session_id"],
        )
        assert spawned == []
        assert len(scripted_api.requests) == requests_before
        assert transcripts(claude_config_dir) == transcripts_before

    store = SqliteCampaignStore(settings.state_path)
    try:
        runs = {run.kind.value: run for run in store.list_runs()}
        assert sorted(runs) == ["orchestrator", "skill"]
        assert {kind: r.status.value for kind, r in runs.items()} == {"orchestrator": "success", "skill": "success"}
        assert runs["skill"].caller_session_id == runs["orchestrator"].run_id == outcome["dispatched_session_id"]
    finally:
        store.close()


# 2. The real CLI as the caller: progress notifications keep a long run_skill alive.

CALLER_IDLE_TIMEOUT_MS = 3000
LONG_SKILL_SECONDS = 40.0
"""Longer than Claude Code's 30 s check of idle tool calls, with a margin for when that check falls."""
CALLER_BOUND = 100.0
LONG_SKILL_ANSWER = "the long skill finished"
LONG_SKILL_SCENARIO: dict[str, Any] = {
    "steps": [
        {"tick": {"interval": 0.5, "duration": LONG_SKILL_SECONDS, "to": "both"}},
        {"assistant": LONG_SKILL_ANSWER},
        {"result": {}},
    ]
}
IDLE_ABORT = "sent no response or progress"


def serve_mcp_config(tmp_path: Path, progress_interval: float) -> dict[str, Any]:
    """``expeditor serve`` over stdio, launching the fake agent, as a user would register it in Claude Code."""
    env = {
        "EXPEDITOR_HOME": str(tmp_path / "expeditor-home"),
        "EXPEDITOR_CLAUDE_COMMAND": FAKE_AGENT_COMMAND,
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
        "EXPEDITOR_PROGRESS_INTERVAL": str(progress_interval),
        "EXPEDITOR_POLL_INTERVAL": "0.1",
        "EXPEDITOR_CHILDREN_INTERVAL": "0.5",
        "EXPEDITOR_KILL_GRACE": "0.5",
        "EXPEDITOR_FAKE_SCENARIO": json.dumps(LONG_SKILL_SCENARIO),
    }
    server = {"type": "stdio", "command": sys.executable, "args": ["-m", "expeditor", "serve"], "env": env}
    return {"mcpServers": {"expeditor": server}}


def run_claude(cli: Path, env: Mapping[str, str], cwd: Path, args: list[str], *, bound: float) -> list[dict[str, Any]]:
    """Run the CLI to its end in its own process group; whatever is left of the group is killed after."""
    command = [str(cli), "--output-format", "stream-json", "--verbose", *args]
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=bound)
    finally:
        with_group_killed(process)
    assert process.returncode == 0, f"claude exited {process.returncode}: {stderr}\n{stdout}"
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def with_group_killed(process: subprocess.Popen[str]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.kill()
    process.communicate()


def finished_run_statuses(home: Path) -> list[str]:
    store = SqliteCampaignStore(home / "state.sqlite3")
    try:
        return [run.status.value for run in store.list_runs()]
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize("progress_interval", [1.0, 600.0], ids=["progress-every-second", "no-progress"])
def test_a_run_skill_longer_than_the_callers_idle_timeout_lives_on_progress(
    claude_cli: Path,
    scripted_api: ScriptedMessagesAPI,
    claude_env: dict[str, str],
    tmp_path: Path,
    project: Path,
    progress_interval: float,
) -> None:
    scripted_api.add(
        Reply((ToolUse(RUN_SKILL, {"skill_command": "/long-skill", "cwd": str(project)}),)),
        Reply.text("The skill call is over."),
    )
    session_id = str(uuid.uuid4())
    env = {**claude_env, "CLAUDE_CODE_MCP_TOOL_IDLE_TIMEOUT": str(CALLER_IDLE_TIMEOUT_MS)}
    config = json.dumps(serve_mcp_config(tmp_path, progress_interval))
    args = ["-p", "Run the long skill.", "--session-id", session_id, "--mcp-config", config]
    args += ["--strict-mcp-config", "--allowedTools", RUN_SKILL]

    events = run_claude(claude_cli, env, project, args, bound=CALLER_BOUND)

    init, result = events[0], events[-1]
    assert [(server["name"], server["status"]) for server in init["mcp_servers"]] == [("expeditor", "connected")]
    assert result["type"] == "result"
    assert result["is_error"] is False, result
    first, second = scripted_api.main_requests
    assert first.session_id == second.session_id == session_id
    [returned] = second.tool_results
    text = tool_result_text(returned)
    statuses = finished_run_statuses(tmp_path / "expeditor-home")
    if progress_interval < CALLER_IDLE_TIMEOUT_MS / 1000:
        # Progress every second: Claude Code waited the whole 40 s for the result.
        assert IDLE_ABORT not in text
        assert returned.get("is_error") in (None, False), text
        skill = json.loads(text)
        assert skill["success"] is True, skill["reason"]
        assert skill["result_text"] == LONG_SKILL_ANSWER
        assert skill["caller_session_id"] == session_id  # the server learnt its caller from Claude Code
        assert skill["duration_s"] >= LONG_SKILL_SECONDS
        assert statuses == ["success"]
    else:
        # The twin: the same call with no progress inside the window is aborted by Claude Code.
        assert returned.get("is_error") is True, text
        assert IDLE_ABORT in text
        assert statuses == ["cancelled"]  # Claude Code cancelled the call; the server stopped the skill
