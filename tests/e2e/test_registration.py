"""The README's registration forms, run with the real Claude Code CLI from a user's own project.

With a temporary HOME, in a git project that is not the checkout: the README's ``claude mcp add --scope
user …`` line registers expeditor; ``claude mcp list`` in that project shows it connected; ``claude -p``
(scripted local API) calls ``run_skill`` through it; the project's ``git status`` shows nothing new
afterwards, and the token efficiency table counts 0 lines for the session that changed nothing.
The README's ``.mcp.json`` and its HTTP line are checked the same way, as far as ``claude mcp list``.
"""

from __future__ import annotations

import json
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from expeditor.reports.aggregate import build_report
from expeditor.reports.render import render_markdown
from expeditor.state import SqliteCampaignStore
from tests.support.scripted_messages_api import Reply, ScriptedMessagesAPI, ToolUse

pytestmark = pytest.mark.real_claude

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent
RUN_SKILL = "mcp__expeditor__run_skill"
PLACEHOLDER = "/abs/path/to/expeditor"
# The skill session (the fake agent) answers and touches nothing.
IDLE_SKILL = {"steps": [{"assistant": "Nothing needed changing."}, {"result": {}}]}


def readme_registration_line(start: str = "claude mcp add --scope user expeditor -- ") -> list[str]:
    """The README's ``claude mcp add`` line that begins with ``start``, split as a shell would split it."""
    blocks = README.read_text().split("```")[1::2]
    [line] = [line.strip() for block in blocks for line in block.splitlines() if line.startswith(start)]
    return shlex.split(line)


def readme_mcp_json() -> dict[str, Any]:
    """The README's ``.mcp.json`` example."""
    [block] = [block for block in README.read_text().split("```")[1::2] if block.startswith('json\n{"mcpServers"')]
    return json.loads(block.removeprefix("json\n"))


def expeditor_listed(claude_cli: Path, project: Path, env: dict[str, str]) -> str:
    """The ``expeditor`` line of ``claude mcp list`` run in ``project``."""
    listed = run([str(claude_cli), "mcp", "list"], cwd=project, env=env, timeout=120)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    [entry] = [line for line in listed.stdout.splitlines() if line.startswith("expeditor")]
    return entry


def run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
    )


def git(project: Path, *args: str) -> str:
    identity = ["-c", "user.name=User", "-c", "user.email=user@example.invalid", "-c", "commit.gpgsign=false"]
    done = subprocess.run(["git", *identity, *args], cwd=project, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def their_project(tmp_path: Path) -> Path:
    """A user's own git project with one commit: a clean work tree."""
    project = (tmp_path / "their-project").resolve()
    project.mkdir()
    (project / "app.py").write_text("print('hello')\n")
    git(project, "init", "--quiet")
    git(project, "add", "app.py")
    git(project, "commit", "--quiet", "-m", "start")
    assert git(project, "status", "--porcelain") == ""
    return project


def test_the_readme_user_scope_line_serves_run_skill_in_another_project_and_leaves_it_clean(
    claude_cli: Path,
    scripted_api: ScriptedMessagesAPI,
    claude_env: dict[str, str],
    their_project: Path,
    tmp_path: Path,
) -> None:
    home = Path(claude_env["HOME"])
    # Claude Code starts the server with its own environment: these reach expeditor, not the README's line.
    env = {
        **claude_env,
        "EXPEDITOR_CLAUDE_COMMAND": str(BIN / "expeditor-fake-agent"),
        "EXPEDITOR_FAKE_SCENARIO": json.dumps(IDLE_SKILL),
        "EXPEDITOR_KILL_GRACE": "0.5",
    }
    command = readme_registration_line()
    assert command[0] == "claude"
    argv = [str(claude_cli), *[str(BIN / "expeditor") if word == PLACEHOLDER else word for word in command[1:]]]
    assert str(BIN / "expeditor") in argv, "the README's line names the installed script by its absolute path"
    # Registered from somewhere else entirely: user scope must not depend on where it was typed.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    added = run(argv, cwd=elsewhere, env=env)
    assert added.returncode == 0, added.stdout + added.stderr

    assert "Connected" in expeditor_listed(claude_cli, their_project, env)

    scripted_api.add(
        Reply((ToolUse(RUN_SKILL, {"skill_command": "/tidy", "cwd": str(their_project)}),)),
        Reply.text("The skill changed nothing."),
    )
    session_id = str(uuid.uuid4())
    ask = [str(claude_cli), "-p", "Tidy the project.", "--session-id", session_id, "--output-format", "json"]
    # `claude -p` connects MCP servers in the background by default; the scripted model calls the tool at once.
    blocking = {**env, "MCP_CONNECTION_NONBLOCKING": "false"}
    asked = run([*ask, "--allowedTools", RUN_SKILL], cwd=their_project, env=blocking, timeout=120)
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert json.loads(asked.stdout)["is_error"] is False, asked.stdout
    [_, second] = scripted_api.main_requests
    [returned] = second.tool_results
    assert returned.get("is_error") in (None, False), returned

    assert git(their_project, "status", "--porcelain", "--untracked-files=all") == ""

    # The home is the per-user state directory, never the project: its one store holds the skill's run.
    stores = [path for root in (home, their_project) for path in root.rglob("state.sqlite3")]
    assert [store.is_relative_to(home) for store in stores] == [True], stores
    store = SqliteCampaignStore(stores[0])
    try:
        runs = store.list_runs()
    finally:
        store.close()
    [skill] = runs
    assert skill.caller_session_id == session_id
    assert skill.status.value == "success"
    report = build_report(runs)
    assert [(row.loc_changed) for row in report.efficiency] == [0]
    markdown = render_markdown(report)
    efficiency = markdown[markdown.index("## Token Efficiency") :].split("\n\n")[1].splitlines()
    assert efficiency[2].split("|")[2].strip() == "0", markdown


def test_the_readme_mcp_json_is_the_projects_server_once_approved(
    claude_cli: Path, claude_env: dict[str, str], their_project: Path
) -> None:
    config = readme_mcp_json()
    server = config["mcpServers"]["expeditor"]
    assert server["command"] == PLACEHOLDER
    server["command"] = str(BIN / "expeditor")
    server["env"]["EXPEDITOR_ALLOWED_ROOTS"] = str(their_project)
    (their_project / ".mcp.json").write_text(json.dumps(config))
    assert "Pending approval" in expeditor_listed(claude_cli, their_project, claude_env)
    # What answering Claude Code's approval prompt records, in the user's settings.
    settings = Path(claude_env["CLAUDE_CONFIG_DIR"]) / "settings.json"
    settings.write_text(json.dumps({"enabledMcpjsonServers": ["expeditor"]}))
    assert "Connected" in expeditor_listed(claude_cli, their_project, claude_env)


def test_the_readme_http_line_reaches_a_served_expeditor_with_its_token(
    claude_cli: Path, claude_env: dict[str, str], their_project: Path, tmp_path: Path
) -> None:
    token = secrets.token_urlsafe(16)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server_env = {**claude_env, "EXPEDITOR_HTTP_TOKEN": token, "EXPEDITOR_HOME": str(tmp_path / "server-home")}
    server = subprocess.Popen(
        [str(BIN / "expeditor"), "serve", "--transport", "http", "--port", str(port)],
        cwd=their_project,
        env=server_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        url = f"http://127.0.0.1:{port}/mcp"
        ready = server.stderr.readline()
        assert url in ready, ready
        command = readme_registration_line("claude mcp add --scope user --transport http expeditor ")
        argv = [str(claude_cli), *(word.replace("8765", str(port)).replace("$TOKEN", token) for word in command[1:])]
        assert url in argv
        assert f"Authorization: Bearer {token}" in argv
        added = run(argv, cwd=their_project, env=claude_env)
        assert added.returncode == 0, added.stdout + added.stderr
        assert "Connected" in expeditor_listed(claude_cli, their_project, claude_env)
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    assert server.returncode == 0
