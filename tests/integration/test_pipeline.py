"""The pipeline runner in process: per-step thresholds, literal captures, faithful replay of loops."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from expeditor.config import Settings
from expeditor.executor import RunControl, RunRequest, Termination
from expeditor.ids import new_session_id
from expeditor.monitor import parse_marker_name
from expeditor.recipes import parse_recipe
from expeditor.recipes.pipeline import (
    STEP_MARKER_LABEL,
    PipelineJob,
    PipelineOutcome,
    PipelineRunner,
)
from expeditor.recipes.progress import SupervisorView
from expeditor.runs import build_executor, steps_to_forget
from expeditor.runs.caller import CallerContext
from expeditor.runs.supervisor import Supervisor
from expeditor.state import ClaimAction, Owner, RunStatus, SqliteCampaignStore, StepStatus
from expeditor.testing import launched_prompts, read_invocation_log
from tests.support.fake import fake_settings

pytestmark = pytest.mark.anyio

PYTHON = sys.executable


def recipe_text(body: str) -> str:
    return "name: t\ndescription: a test pipeline\norchestrator: pipeline\n" + textwrap.dedent(body)


async def run_pipeline(
    settings: Settings,
    cwd: Path,
    body: str,
    *,
    inputs: dict[str, str] | None = None,
    run_id: str | None = None,
) -> tuple[PipelineOutcome, SqliteCampaignStore]:
    recipe = parse_recipe(recipe_text(body), source="t.yaml")
    store = SqliteCampaignStore(settings.state_path)
    supervisor = Supervisor(settings, build_executor(settings), store=store)
    job = PipelineJob(recipe, recipe.resolve_inputs(inputs or {}), "c", "j", cwd, run_id or new_session_id())
    return await PipelineRunner(settings, store, supervisor, job).run(), store


FAILS_ON_FIRST_VISIT = (
    "import os, sys; first = not os.path.exists('tested'); open('tested', 'a').close(); sys.exit(1 if first else 0)"
)


def scenario(*steps: dict[str, Any]) -> str:
    return json.dumps({"steps": list(steps)})


QUIET_STEP = f"/quiet {scenario({'sleep': 1.2}, {'result': 'done'})}"


@pytest.mark.parametrize(("threshold", "ends"), [(0.4, "failure"), (4, "success")])
async def test_a_steps_own_stale_threshold_governs_its_watchers(tmp_path: Path, threshold: float, ends: str) -> None:
    # The settings' threshold is 60 s: only the step's own threshold can decide.
    settings = fake_settings(tmp_path)
    body = f"""
    steps:
      quiet:
        skill: '{QUIET_STEP}'
        stale_threshold: {threshold}
    """
    outcome, store = await run_pipeline(settings, tmp_path, body)
    (run,) = store.list_runs("c")
    assert outcome.status == ends
    if ends == "failure":
        assert run.termination is Termination.STALE
        assert outcome.executions[0].status is StepStatus.FAILURE
        assert "stale" in (outcome.executions[0].reason or "")
    else:
        assert run.termination is Termination.COMPLETED
        assert run.status is RunStatus.SUCCESS


@pytest.mark.parametrize(("threshold", "ends"), [(0.4, "failure"), (4, "success")])
async def test_a_run_steps_threshold_governs_its_stdout_silence(tmp_path: Path, threshold: float, ends: str) -> None:
    settings = fake_settings(tmp_path)
    body = f"""
    steps:
      quiet:
        run: ['{PYTHON}', '-c', 'import time; time.sleep(1.2)']
        stale_threshold: {threshold}
    """
    outcome, store = await run_pipeline(settings, tmp_path, body)
    (run,) = store.list_runs("c")
    assert outcome.status == ends
    assert run.termination is (Termination.IDLE_STALL if ends == "failure" else Termination.COMPLETED)


async def test_a_captured_value_with_shell_metacharacters_reaches_the_next_argv_literally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nasty = """x; touch pwned && echo $(touch pwned2) | `touch pwned3` "dq" 'sq' > out <in * ~ {brace} \\ end"""
    log = tmp_path / "agent.log"
    monkeypatch.setenv("EXPEDITOR_FAKE_LOG", str(log))
    settings = fake_settings(tmp_path)
    report = "import json; print('value=' + json.load(open('value.json')))"
    (tmp_path / "value.json").write_text(json.dumps(nasty))
    body = f"""
    steps:
      produce:
        run: ['{PYTHON}', '-c', "{report}"]
        capture: [value]
      consume:
        run: ['{PYTHON}', '-c', 'import json, sys; open("argv.json", "w").write(json.dumps(sys.argv[1:]))', '{{value}}']
      ask:
        skill: /echo {{value}}
    """
    outcome, _ = await run_pipeline(settings, tmp_path, body)
    assert outcome.status == "success", outcome.reason
    assert outcome.captures == {"value": nasty}
    assert json.loads((tmp_path / "argv.json").read_text()) == [nasty]
    assert not list(tmp_path.glob("pwned*"))
    assert launched_prompts(log) == [f"/echo {nasty}"]


async def test_a_fix_loop_is_replayed_faithfully_and_the_rerun_resumes_at_the_failed_step(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    trail = tmp_path / "trail.txt"

    def step(name: str, code: str = "") -> str:
        script = f"open({str(trail)!r}, 'a').write({name!r} + chr(10)); " + (code or "pass")
        return f"run: ['{PYTHON}', '-c', {json.dumps(script)}]"

    # test fails on its first visit only; deploy fails until the file `ready` exists.
    body = f"""
    steps:
      build:
        {step("build")}
      test:
        {step("test", FAILS_ON_FIRST_VISIT)}
        on_success: deploy
        on_failure: fix
      fix:
        {step("fix")}
        on_success: test
      deploy:
        {step("deploy", "import os, sys; sys.exit(0 if os.path.exists('ready') else 1)")}
    """
    first, store = await run_pipeline(settings, tmp_path, body)
    assert first.status == "failure"
    assert trail.read_text().split() == ["build", "test", "fix", "test", "deploy"]
    recorded = store.list_steps("c", "j")
    assert [(e.step, e.status) for e in recorded] == [
        ("build", StepStatus.SUCCESS),
        ("test", StepStatus.FAILURE),
        ("fix", StepStatus.SUCCESS),
        ("test", StepStatus.SUCCESS),
        ("deploy", StepStatus.FAILURE),
    ]

    (tmp_path / "ready").touch()
    second, store = await run_pipeline(settings, tmp_path, body)
    assert second.status == "success", second.reason
    assert second.replayed == 4
    # Only deploy ran again: the loop's four executions were replayed, not relaunched.
    assert trail.read_text().split() == ["build", "test", "fix", "test", "deploy", "deploy"]
    assert [e.step for e in store.list_steps("c", "j")] == ["build", "test", "fix", "test", "deploy"]
    assert store.list_steps("c", "j")[-1].status is StepStatus.SUCCESS


async def test_retries_count_attempts_and_a_step_past_its_visit_limit_fails_the_run(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    body = f"""
    steps:
      flaky:
        run: ['{PYTHON}', '-c', 'import sys; sys.exit(3)']
        retries: 2
        on_failure: flaky
        max_visits: 2
    """
    outcome, store = await run_pipeline(settings, tmp_path, body)
    assert outcome.status == "failure"
    assert "limit is 2" in outcome.reason
    assert [e.attempts for e in outcome.executions] == [3, 3]
    assert len(store.list_runs("c")) == 6


async def test_a_blocking_step_holds_a_marker_for_the_pipeline_run(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    run_id = new_session_id()
    seen = tmp_path / "markers-seen.json"
    look = f"import json, os; json.dump(os.listdir({str(settings.markers_path)!r}), open({str(seen)!r}, 'w'))"
    body = f"""
    steps:
      look:
        run: ['{PYTHON}', '-c', {json.dumps(look)}]
    """
    outcome, _ = await run_pipeline(settings, tmp_path, body, run_id=run_id)
    assert outcome.status == "success"
    (name,) = json.loads(seen.read_text())
    assert parse_marker_name(name) == (STEP_MARKER_LABEL, run_id)
    assert list(settings.markers_path.glob("*.marker")) == []


async def test_a_placeholder_without_a_value_fails_the_step_without_launching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "agent.log"
    monkeypatch.setenv("EXPEDITOR_FAKE_LOG", str(log))
    settings = fake_settings(tmp_path)
    body = """
    steps:
      first:
        skill: /first
        capture: [ticket]
      second:
        skill: /second {ticket}
    """
    outcome, _ = await run_pipeline(settings, tmp_path, body)
    assert outcome.status == "failure"
    assert "{ticket}" in outcome.reason
    assert launched_prompts(log) == ["/first"]


async def test_a_steps_model_and_timeout_reach_its_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "agent.log"
    monkeypatch.setenv("EXPEDITOR_FAKE_LOG", str(log))
    settings = fake_settings(tmp_path)  # timeout 60 s, no default model
    body = f"""
    defaults:
      model: haiku
    steps:
      quick:
        skill: /quick
      slow:
        skill: '/slow {scenario({"tick": {"interval": 0.1, "duration": 5, "to": "both"}}, {"result": "late"})}'
        model: opus
        timeout: 0.8
    """
    outcome, store = await run_pipeline(settings, tmp_path, body)
    assert outcome.status == "failure"
    quick, slow = store.list_runs("c")
    assert (quick.model, slow.model) == ("haiku", "opus")
    assert slow.termination is Termination.TIMEOUT
    models = []
    for record in read_invocation_log(log):
        if record["event"] == "launch":
            argv = record["argv"]
            models.append(argv[argv.index("--model") + 1])
    assert models == ["haiku", "opus"]


STDERR_PROGRESS = (
    "import sys, time\nfor _ in range(8):\n    print('compiling', file=sys.stderr, flush=True)\n    time.sleep(0.2)"
)
FAKE_RESULT_LINE = (
    "import json, time; print(json.dumps({'type': 'result', 'is_error': True, 'result': 'x'}), flush=True); "
    "time.sleep(0.6); print('done')"
)


@pytest.mark.parametrize(
    ("name", "script"), [("stderr progress", STDERR_PROGRESS), ("result-like output", FAKE_RESULT_LINE)]
)
async def test_a_run_step_is_judged_as_a_command(tmp_path: Path, name: str, script: str) -> None:
    # stderr is a command's progress, and its stdout is text: neither may end it early.
    settings = fake_settings(tmp_path)
    body = f"""
    steps:
      build:
        run: ['{PYTHON}', '-c', {json.dumps(script)}]
        stale_threshold: 1.0
    """
    outcome, store = await run_pipeline(settings, tmp_path, body)
    (run,) = store.list_runs("c")
    assert outcome.status == "success", (name, outcome.reason)
    assert run.termination is Termination.COMPLETED


async def test_a_step_the_executor_refuses_fails_with_the_reason_and_the_run_goes_on(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    body = """
    inputs:
      flag: {default: --help}
    steps:
      ask:
        skill: '{flag}'
        on_failure: recover
      recover:
        skill: /recover
    """
    outcome, store = await run_pipeline(settings, tmp_path, body)
    assert outcome.status == "success", outcome.reason
    ask, recover = outcome.executions
    assert ask.status is StepStatus.FAILURE
    assert "starts with '-'" in (ask.reason or "")
    assert recover.status is StepStatus.SUCCESS
    assert [run.label for run in store.list_runs("c")] == ["recover"]  # the refused one never launched


async def test_steps_recorded_under_other_inputs_are_not_replayed(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    store = SqliteCampaignStore(settings.state_path)
    try:
        claim = store.claim("c", "j", recipe="t", inputs={"topic": "a"}, caller_session_id=None, owner=Owner.current())
        assert claim.action is ClaimAction.LAUNCH
        store.mark_running("c", "j", attempt=1, dispatched_session_id=new_session_id())
        store.mark_failed("c", "j", attempt=1, error="step two failed")
        previous = store.get("c", "j")
        assert steps_to_forget(previous, {"topic": "a"}, forced=False) is None
        assert "inputs changed" in (steps_to_forget(previous, {"topic": "b"}, forced=False) or "")
        assert "forced" in (steps_to_forget(previous, {"topic": "a"}, forced=True) or "")
        assert steps_to_forget(None, {"topic": "b"}, forced=True) is None
    finally:
        store.close()


async def test_the_live_view_reads_a_running_step_s_tokens_from_its_transcript(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    supervisor = Supervisor(settings, build_executor(settings))
    view = SupervisorView(supervisor)
    reply = {"assistant": {"content": "working", "usage": {"input": 10, "output": 20, "cache_read": 300}}}
    request = RunRequest(prompt=f"/step {scenario(reply, {'hang': True})}", cwd=tmp_path, session_id=new_session_id())
    control = RunControl()
    seen: list[int] = []

    async def watch() -> None:
        await control.started.wait()
        assert request.session_id is not None
        with anyio.fail_after(10):
            # Another process's file: there is no event for its growth, only its size. The watchers see the
            # session move a poll later (or when its stdout is read), so both are awaited, neither assumed.
            while view.tokens_so_far(request.session_id) == 0 or view.last_activity(request.session_id) is None:
                await anyio.sleep(0.05)
        seen.append(view.tokens_so_far(request.session_id))
        control.cancel("seen enough")

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        await supervisor.run(request, CallerContext(None, None), control=control)
    assert seen == [330]


async def test_a_command_s_arguments_are_checked_one_by_one_not_joined_as_a_prompt(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    body = f"""
    inputs:
      text: {{default: "{"x" * 70_000}"}}
    steps:
      count:
        run: ['{PYTHON}', '-c', 'import sys; print(sum(map(len, sys.argv[1:])))', '{{text}}', '{{text}}']
    """
    outcome, _ = await run_pipeline(settings, tmp_path, body)
    assert outcome.status == "success", outcome.reason
