"""The command line, run as a real process: run-skill and demo."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from expeditor.demo import run_demo
from expeditor.runs import build_executor
from tests.support.fake import FAKE_AGENT_COMMAND


def expeditor(
    tmp_path: Path, *args: str, scenario: dict[str, object] | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "EXPEDITOR_CLAUDE_COMMAND": FAKE_AGENT_COMMAND,
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
    }
    if scenario is not None:
        env["EXPEDITOR_FAKE_SCENARIO"] = json.dumps(scenario)
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "expeditor", "--home", str(tmp_path / "home"), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_skill_prints_the_result_as_json(tmp_path: Path) -> None:
    done = expeditor(
        tmp_path,
        "run-skill",
        "/make-plan 42",
        "--cwd",
        str(tmp_path),
        "--model",
        "haiku",
        "--json",
        scenario={"steps": [{"assistant": "Plan written."}, {"result": {}}]},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["success"] is True
    assert result["termination"] == "completed"
    assert result["result_text"] == "Plan written."
    assert (tmp_path / "home" / "logs" / "expeditor.log").read_text().count(result["session_id"]) >= 2


def test_run_skill_exits_1_when_the_session_fails(tmp_path: Path) -> None:
    done = expeditor(tmp_path, "run-skill", "/x", "--cwd", str(tmp_path), scenario={"steps": [{"exit": 4}]})
    assert done.returncode == 1
    assert "crashed" in done.stdout


def test_a_missing_agent_says_how_to_install_it_or_which_setting_to_change(tmp_path: Path) -> None:
    missing = {"EXPEDITOR_CLAUDE_COMMAND": str(tmp_path / "no-such-claude")}
    ran = expeditor(tmp_path, "run-skill", "/x", "--cwd", str(tmp_path), extra_env=missing)
    assert ran.returncode == 1
    assert "launch_failed" in ran.stdout
    assert "EXPEDITOR_CLAUDE_COMMAND" in ran.stderr
    assert "npm install -g @anthropic-ai/claude-code" in ran.stderr
    dispatched = expeditor(
        tmp_path, "dispatch", "c", "j", "--recipe", "diagnose", "--input", "problem=p", extra_env=missing
    )
    assert dispatched.returncode == 1
    assert "EXPEDITOR_CLAUDE_COMMAND" in dispatched.stderr
    with_agent = expeditor(tmp_path, "run-skill", "/x", "--cwd", str(tmp_path), scenario={"steps": [{"exit": 3}]})
    assert with_agent.returncode == 1
    assert "EXPEDITOR_CLAUDE_COMMAND" not in with_agent.stderr  # the agent is there: no hint about installing it


def test_run_skill_refuses_an_unknown_model_with_the_list(tmp_path: Path) -> None:
    done = expeditor(tmp_path, "run-skill", "/x", "--cwd", str(tmp_path), "--model", "gpt-5")
    assert done.returncode == 2
    assert "sonnet, opus, haiku" in done.stderr
    assert done.stdout == ""


def test_run_skill_refuses_a_cwd_outside_the_allowed_roots(tmp_path: Path) -> None:
    done = expeditor(tmp_path, "run-skill", "/x", "--cwd", "/")
    assert done.returncode == 2
    assert "outside the allowed roots" in done.stderr


def test_the_demo_shows_every_outcome_and_passes(tmp_path: Path) -> None:
    buffer = io.StringIO()
    report = tmp_path / "report.md"
    assert run_demo(Console(file=buffer, width=160), markdown_out=report) == 0
    text = buffer.getvalue()
    assert text.count("PASS") == 4
    assert "FAIL" not in text
    for claim in ("survives its stale threshold", "killed as stale", "returns at once", "token usage report"):
        assert claim in text
    markdown = report.read_text()
    for header in (
        "| Step | Model | count | uncached | output | cache_read | peak_ctx | turns | cache_write | time |",
        "| Step | LoC Changed | cache_read/LoC | cache_write/LoC | output/LoC |",
        "| Model | steps | uncached | output | cache_read | cache_write | time |",
    ):
        assert header in markdown


def test_recipe_commands_list_show_and_validate(tmp_path: Path) -> None:
    listed = expeditor(tmp_path, "recipe", "list")
    assert listed.returncode == 0
    assert {"demo", "diagnose", "implementation"} <= {line.split()[0] for line in listed.stdout.splitlines()[1:]}
    shown = expeditor(tmp_path, "recipe", "show", "diagnose")
    assert shown.returncode == 0
    assert "stale_threshold 2400 s" in shown.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\ndescription: x\nsteps:\n  a:\n    skil: /x\n")
    validated = expeditor(tmp_path, "recipe", "validate", str(broken))
    assert validated.returncode == 1
    assert "did you mean 'skill'" in validated.stdout


def test_dispatch_twice_runs_once_and_short_circuits(tmp_path: Path) -> None:
    scenario: dict[str, object] = {"steps": [{"assistant": "job done"}, {"result": {}}]}
    arguments = ("dispatch", "camp", "job", "--recipe", "diagnose", "--input", "problem=p", "--cwd", str(tmp_path))
    first = expeditor(tmp_path, *arguments, "--json", scenario=scenario)
    assert first.returncode == 0, first.stderr
    second = expeditor(tmp_path, *arguments, "--json", scenario=scenario)
    assert second.returncode == 0, second.stderr
    before, after = json.loads(first.stdout), json.loads(second.stdout)
    assert before["short_circuited"] is False
    assert after["short_circuited"] is True
    assert after["dispatched_session_id"] == before["dispatched_session_id"]


def test_dispatch_refuses_an_input_that_is_not_key_value(tmp_path: Path) -> None:
    done = expeditor(tmp_path, "dispatch", "camp", "job", "--recipe", "diagnose", "--input", "oops")
    assert done.returncode == 2
    assert "is not key=value" in done.stderr


@pytest.mark.anyio
async def test_status_shows_what_a_live_session_waits_on_and_why_it_is_alive(tmp_path: Path) -> None:
    import anyio

    from expeditor.executor import RunControl
    from tests.support.fake import fake_settings, scenario_request
    from tests.support.marker_hold import marker_hold

    settings = fake_settings(tmp_path)
    executor = build_executor(settings)
    control = RunControl()
    request = scenario_request(tmp_path, {"steps": [{"assistant": "calling a tool"}, {"hang": True}]})
    outputs: list[str] = []
    async with anyio.create_task_group() as group:

        async def look() -> None:
            await control.started.wait()
            assert control.session is not None
            # Held by an expeditor process of its own, as a server would: status, another process, counts it.
            session_id = control.session.session_id
            async with marker_hold(settings.home, session_id, "--label", "run-skill", marker_dir=settings.markers_path):
                done = await anyio.to_thread.run_sync(
                    lambda: expeditor(tmp_path, "status", extra_env={"COLUMNS": "250"}),
                )
                outputs.append(done.stdout)
            control.cancel("looked", grace=0.05)

        group.start_soon(look)
        await executor.run(request, marker_dir=settings.markers_path, caller_session_id="the-caller", control=control)
    (text,) = outputs
    assert "Live sessions (1)" in text
    assert "run-skill" in text
    assert "marker" in text
