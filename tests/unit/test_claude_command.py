"""The argv and environment of a launched session are exactly what Claude Code needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from expeditor.config import Settings, load_settings
from expeditor.errors import InvalidIdentifier, InvalidInput
from expeditor.executor import RunRequest, SessionKind, build_command, child_environment
from expeditor.runs import build_executor

SID = "6f1d2c3b-4a59-4e7f-8a1b-2c3d4e5f6a7b"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        home=tmp_path / "home",
        claude_command="/opt/claude --debug",
        claude_config_dir=tmp_path / "claude",
        allowed_roots=(tmp_path,),
    )


def test_a_new_session_gets_the_id_we_chose(settings: Settings, tmp_path: Path) -> None:
    request = RunRequest(prompt="/make-plan 42", cwd=tmp_path, model="opus")
    argv = build_command(settings, request, "sid-1", mcp_config=None)
    assert argv[:4] == ["/opt/claude", "--debug", "-p", "/make-plan 42"]
    assert argv[argv.index("--output-format") + 1] == "stream-json"
    assert "--verbose" in argv
    assert argv[argv.index("--session-id") + 1] == "sid-1"
    assert argv[argv.index("--model") + 1] == "opus"
    assert "--resume" not in argv


def test_a_resumed_session_never_also_gets_a_session_id(settings: Settings, tmp_path: Path) -> None:
    request = RunRequest(prompt="continue", cwd=tmp_path, resume_session_id="old-id")
    argv = build_command(settings, request, "old-id", mcp_config=None)
    assert argv[argv.index("--resume") + 1] == "old-id"
    assert "--session-id" not in argv


def test_allowed_tools_come_last_so_they_cannot_swallow_the_prompt(settings: Settings, tmp_path: Path) -> None:
    request = RunRequest(
        prompt="go",
        cwd=tmp_path,
        allowed_tools=("mcp__expeditor__run_skill", "Read"),
        mcp_config={"mcpServers": {"expeditor": {"command": "expeditor", "args": ["serve"]}}},
        extra_args=("--max-turns", "3"),
    )
    config_file = tmp_path / "mcp-config.json"  # the config goes by path: inline JSON would sit in /proc/PID/cmdline
    argv = build_command(settings, request, "sid", mcp_config=config_file)
    assert argv[-3:] == ["--allowedTools", "mcp__expeditor__run_skill", "Read"]
    assert argv[argv.index("--mcp-config") + 1] == str(config_file)
    assert argv[argv.index("--max-turns") + 1] == "3"


def test_shell_metacharacters_in_the_prompt_stay_one_literal_argument(settings: Settings, tmp_path: Path) -> None:
    prompt = "/fix $(rm -rf /); `id` | tee x && echo 'q'"
    argv = build_command(settings, RunRequest(prompt=prompt, cwd=tmp_path), "sid", mcp_config=None)
    assert argv[argv.index("-p") + 1] == prompt


def test_the_child_environment_says_who_it_is_and_who_waits(settings: Settings, tmp_path: Path) -> None:
    base = {"ANTHROPIC_API_KEY": "k", "CLAUDE_CODE_SESSION_ID": "parent", "PATH": "/bin"}
    env = child_environment(
        base,
        settings,
        RunRequest(prompt="x", cwd=tmp_path, kind=SessionKind.ORCHESTRATOR),
        session_id="child",
        marker_dir=tmp_path / "markers",
        caller_session_id="parent",
    )
    assert "CLAUDE_CODE_SESSION_ID" not in env
    assert env["ANTHROPIC_API_KEY"] == "k"
    assert env["EXPEDITOR_SESSION_ID"] == "child"
    assert env["EXPEDITOR_PARENT_SESSION_ID"] == "parent"
    assert env["EXPEDITOR_MARKER_DIR"] == str(tmp_path / "markers")
    assert env["EXPEDITOR_SESSION_KIND"] == "orchestrator"
    assert env["CLAUDE_CONFIG_DIR"] == str(tmp_path / "claude")


def test_a_session_without_caller_carries_no_inherited_parent_id(settings: Settings, tmp_path: Path) -> None:
    env = child_environment(
        {"EXPEDITOR_PARENT_SESSION_ID": "stale"},
        settings,
        RunRequest(prompt="x", cwd=tmp_path),
        session_id="child",
        marker_dir=None,
        caller_session_id=None,
    )
    assert "EXPEDITOR_PARENT_SESSION_ID" not in env
    assert "EXPEDITOR_MARKER_DIR" not in env


def test_a_cwd_outside_the_allowed_roots_is_refused(settings: Settings) -> None:
    executor = build_executor(settings, env={})
    with pytest.raises(InvalidInput, match="outside the allowed roots"):
        executor.prepare(RunRequest(prompt="x", cwd=Path("/")), marker_dir=None, caller_session_id=None)


def test_a_missing_cwd_is_refused(settings: Settings, tmp_path: Path) -> None:
    executor = build_executor(settings, env={})
    with pytest.raises(InvalidInput, match="does not exist"):
        executor.prepare(RunRequest(prompt="x", cwd=tmp_path / "nope"), marker_dir=None, caller_session_id=None)


def test_a_prompt_that_looks_like_a_flag_is_refused(settings: Settings, tmp_path: Path) -> None:
    executor = build_executor(settings, env={})
    with pytest.raises(InvalidInput, match="starts with '-'"):
        executor.prepare(RunRequest(prompt="--help", cwd=tmp_path), marker_dir=None, caller_session_id=None)


@pytest.mark.parametrize("bad", ["../x", "a/b", "a b", "", "abc-in-progress-x"])
def test_session_ids_that_cannot_be_file_names_are_refused(settings: Settings, tmp_path: Path, bad: str) -> None:
    executor = build_executor(settings, env={})
    with pytest.raises((InvalidIdentifier, ValueError)):
        executor.prepare(RunRequest(prompt="x", cwd=tmp_path), marker_dir=None, caller_session_id=bad)


def test_the_transcript_path_is_known_before_launch(settings: Settings, tmp_path: Path) -> None:
    work = tmp_path / "my work.v2_x"
    work.mkdir()
    executor = build_executor(settings, env={})
    spec, policy = executor.prepare(
        RunRequest(prompt="x", cwd=work, session_id=SID, stale_threshold=5),
        marker_dir=None,
        caller_session_id=None,
    )
    mangled = "".join(c if c.isalnum() else "-" for c in str(work.resolve()))
    assert spec.transcript_path == tmp_path / "claude" / "projects" / mangled / f"{SID}.jsonl"
    assert (policy.stale_threshold, policy.idle_timeout) == (5, 5)


def test_a_session_id_that_is_not_a_uuid_is_refused(settings: Settings, tmp_path: Path) -> None:
    executor = build_executor(settings, env={})
    with pytest.raises(InvalidInput, match="not a UUID"):
        executor.prepare(
            RunRequest(prompt="x", cwd=tmp_path, session_id="abc"), marker_dir=None, caller_session_id=None
        )
