"""Budgets with the fake agent: a campaign's refuses a dispatch before launching, a job's stops its pipeline
between steps until it is raised, and a session's own (``--max-budget-usd``) ends it as the CLI does."""

from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from expeditor.config import Settings
from expeditor.dispatch import DispatchService
from expeditor.errors import BudgetSpent
from expeditor.executor import RunRequest
from expeditor.ids import new_session_id
from expeditor.recipes import parse_recipe
from expeditor.recipes.pipeline import PipelineJob, PipelineRunner
from expeditor.reports import campaign_report, render_markdown
from expeditor.runs import CallerContext, build_executor, open_runtime
from expeditor.runs.campaign_command import campaign_budget_command
from expeditor.runs.supervisor import Supervisor
from expeditor.server.app import build_server
from expeditor.state import DispatchStatus, SqliteCampaignStore, StepStatus
from expeditor.testing import launched_prompts, read_invocation_log
from tests.support.fake import fake_settings

pytestmark = pytest.mark.anyio

TWO_CENTS = json.dumps({"steps": [{"result": {"text": "done", "cost_usd": 0.02}}]})


def scenarios(tmp_path: Path, *commands: str) -> Path:
    """Each command's fake agent reports a $0.02 result; returns the scenario directory."""
    directory = tmp_path / "scenarios"
    directory.mkdir(exist_ok=True)
    for command in commands:
        (directory / f"{command}.json").write_text(TWO_CENTS)
    return directory


def agent_env(tmp_path: Path) -> dict[str, str]:
    return {
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
        "EXPEDITOR_FAKE_SCENARIO_DIR": str(scenarios(tmp_path, "one", "two", "three")),
    }


def launched(tmp_path: Path) -> list[str]:
    log = tmp_path / "agent.log"
    return [prompt.split()[0] for prompt in launched_prompts(log)] if log.exists() else []


TWO_STEPS = """\
name: twostep
description: two steps of two cents each
orchestrator: pipeline
steps:
  one: {skill: /one}
  two: {skill: /two}
"""


async def test_a_campaign_budget_refuses_the_dispatch_that_would_start_past_it_with_both_figures(
    tmp_path: Path,
) -> None:
    settings = fake_settings(tmp_path)
    settings.recipes_dir.mkdir(parents=True)
    (settings.recipes_dir / "twostep.yaml").write_text(TWO_STEPS)
    out = io.StringIO()
    assert campaign_budget_command(settings, "nightly", (0.05, None), as_json=False, out=out) == 0
    assert "budget $0.05" in out.getvalue()
    env = {**os.environ, **agent_env(tmp_path)}
    caller = CallerContext(session_id=None, kind=None)

    async with open_runtime(settings, env=env) as runtime:
        service = DispatchService(runtime)
        first = await service.dispatch("nightly", "fix-1", "twostep", {}, caller=caller, cwd=tmp_path)
        assert first.status is DispatchStatus.SUCCESS, first.message
        # $0.04 spent, under $0.05: the second job starts, and stops once its first step passes the budget.
        second = await service.dispatch("nightly", "fix-2", "twostep", {}, caller=caller, cwd=tmp_path)
        assert second.status is DispatchStatus.FAILURE
        assert "campaign nightly has spent $0.06 of its $0.05 budget" in second.message
        recorded = runtime.store.get("nightly", "fix-2")
        assert recorded is not None
        assert "stopped before step 'two': campaign nightly has spent $0.06" in (recorded.error or "")
        assert launched(tmp_path) == ["/one", "/two", "/one"]

        with pytest.raises(BudgetSpent) as refused:
            await service.dispatch("nightly", "fix-3", "twostep", {}, caller=caller, cwd=tmp_path)
        assert "campaign nightly has spent $0.06 of its $0.05 budget" in str(refused.value)
        assert "expeditor campaign budget nightly" in str(refused.value)
        assert runtime.store.get("nightly", "fix-3") is None
        assert launched(tmp_path) == ["/one", "/two", "/one"]

        report = render_markdown(campaign_report(runtime.store, "nightly"))
    assert "## Budgets" in report
    assert "| campaign nightly | $0.05 | $0.0600 |" in report

    out = io.StringIO()
    campaign_budget_command(settings, "nightly", None, as_json=True, out=out)
    shown = json.loads(out.getvalue())
    assert (shown["max_budget_usd"], round(shown["spent_usd"], 6), shown["estimate"]) == (0.05, 0.06, False)


def job_recipe(budget: float) -> str:
    return f"""\
name: t
description: three steps of two cents each under a job budget
orchestrator: pipeline
max_budget_usd: {budget}
steps:
  one: {{skill: /one}}
  two: {{skill: /two}}
  three: {{skill: /three, max_budget_usd: 0.5}}
"""


async def run_job(settings: Settings, tmp_path: Path, budget: float) -> tuple[Any, SqliteCampaignStore]:
    recipe = parse_recipe(job_recipe(budget), source="t.yaml")
    store = SqliteCampaignStore(settings.state_path)
    supervisor = Supervisor(settings, build_executor(settings, env={**os.environ, **agent_env(tmp_path)}), store=store)
    job = PipelineJob(recipe, {}, "c", "j", tmp_path, new_session_id())
    return await PipelineRunner(settings, store, supervisor, job).run(), store


def budget_flags(tmp_path: Path) -> list[str | None]:
    """Each launch's --max-budget-usd value (None: not given)."""
    flags: list[str | None] = []
    for record in read_invocation_log(tmp_path / "agent.log"):
        if record["event"] != "launch":
            continue
        argv: list[str] = record["argv"]
        flags.append(argv[argv.index("--max-budget-usd") + 1] if "--max-budget-usd" in argv else None)
    return flags


async def test_a_job_budget_stops_the_pipeline_between_steps_and_a_raised_one_lets_the_rerun_go_on(
    tmp_path: Path,
) -> None:
    settings = fake_settings(tmp_path)
    stopped, store = await run_job(settings, tmp_path, 0.03)
    try:
        assert stopped.status == "failure"
        assert "stopped before step 'three'" in stopped.reason
        assert "job c/j has spent $0.04 of its $0.03 budget" in stopped.reason
        assert "raise max_budget_usd" in stopped.reason
        assert [(e.step, e.status) for e in store.list_steps("c", "j")] == [
            ("one", StepStatus.SUCCESS),
            ("two", StepStatus.SUCCESS),
        ]
        assert launched(tmp_path) == ["/one", "/two"]
        assert budget_flags(tmp_path) == [None, None]
    finally:
        store.close()

    resumed, store = await run_job(settings, tmp_path, 1.0)
    try:
        assert resumed.status == "success", resumed.reason
        assert resumed.replayed == 2
        assert launched(tmp_path) == ["/one", "/two", "/three"]
        # The step's own budget reaches Claude Code as given.
        assert budget_flags(tmp_path) == [None, None, "0.5"]
        (job_budget,) = campaign_report(store, "c").budgets
        assert (job_budget.scope, job_budget.max_budget_usd, round(job_budget.spent_usd, 6)) == ("job c/j", 1.0, 0.06)
    finally:
        store.close()


async def test_a_session_claude_code_stops_at_its_own_budget_is_reported_as_such(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    # 1,000 input and 20,000 output tokens on Sonnet 4.5: $0.303, past the $0.1 budget after the first turn.
    scenario = {
        "steps": [
            {"assistant": {"content": "thinking hard", "usage": {"input": 1000, "output": 20000}}},
            {"assistant": "never sent"},
            {"result": "never reached"},
        ]
    }
    env = {"EXPEDITOR_FAKE_SCENARIO": json.dumps(scenario), "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log")}
    request = RunRequest(prompt="/spend", cwd=tmp_path, env=env, max_budget_usd=0.1, session_id=str(uuid.uuid4()))

    result = await build_executor(settings).run(request, marker_dir=None, caller_session_id=None)

    assert not result.success
    assert result.exit_code == 1
    assert result.reason == (
        "Claude Code stopped the session at its budget (--max-budget-usd): Reached maximum budget ($0.1)"
    )
    assert result.usage.total.cost_usd == pytest.approx(0.303)
    assert budget_flags(tmp_path) == ["0.1"]


async def test_a_token_budget_stops_a_job_the_same_way(tmp_path: Path) -> None:
    # A non-Anthropic model, whose cost expeditor could not estimate: tokens bound the job all the same.
    reply = {"content": "done", "model": "glm-4.6", "usage": {"input": 70, "output": 50}}
    scenario_dir = tmp_path / "scenarios"
    scenario_dir.mkdir()
    (scenario_dir / "one.json").write_text(json.dumps({"steps": [{"assistant": reply}, {"result": {}}]}))
    recipe = parse_recipe(
        "name: t\ndescription: a token budget\norchestrator: pipeline\nmax_tokens: 100\n"
        "steps:\n  one: {skill: /one}\n  two: {skill: /two}\n",
        source="t.yaml",
    )
    settings = fake_settings(tmp_path)
    env = {
        **os.environ,
        "EXPEDITOR_FAKE_SCENARIO_DIR": str(scenario_dir),
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
    }
    store = SqliteCampaignStore(settings.state_path)
    try:
        supervisor = Supervisor(settings, build_executor(settings, env=env), store=store)
        job = PipelineJob(recipe, {}, "c", "j", tmp_path, new_session_id())
        outcome = await PipelineRunner(settings, store, supervisor, job).run()
        assert outcome.status == "failure"
        assert "stopped before step 'two'" in outcome.reason
        assert "job c/j has used 120 tokens of its 100-token budget" in outcome.reason
        assert launched(tmp_path) == ["/one"]
    finally:
        store.close()


async def test_run_skill_passes_the_callers_session_budget(tmp_path: Path) -> None:
    # An agent orchestrator runs a recipe's steps through run_skill: a step's max_budget_usd reaches
    # Claude Code only through it.
    env = {
        **os.environ,
        "EXPEDITOR_FAKE_SCENARIO": TWO_CENTS,
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
        "CLAUDE_CODE_SESSION_ID": str(uuid.uuid4()),
    }
    arguments: dict[str, Any] = {"skill_command": "/one", "cwd": str(tmp_path), "max_budget_usd": 0.25}
    async with Client(build_server(fake_settings(tmp_path), env=env)) as client:
        ran = await client.call_tool("run_skill", arguments)
        refused = await client.call_tool("run_skill", {**arguments, "max_budget_usd": 0})

    assert not ran.is_error
    assert budget_flags(tmp_path) == ["0.25"]
    assert refused.is_error


AGENT_STEPS = """\
name: agentic
description: an agent walks two steps of two cents each
steps:
  one: {skill: /one}
  two: {skill: /two}
"""


async def test_an_agent_orchestrators_next_step_is_refused_once_its_campaign_budget_is_spent(tmp_path: Path) -> None:
    # The agent orchestrator runs its steps through run_skill: past the budget, its next step does not launch.
    settings = fake_settings(tmp_path)
    settings.recipes_dir.mkdir(parents=True)
    (settings.recipes_dir / "agentic.yaml").write_text(AGENT_STEPS)
    assert campaign_budget_command(settings, "nightly", (0.02, None), as_json=False, out=io.StringIO()) == 0
    calls = [
        {
            "call_tool": {
                "server": "expeditor",
                "tool": "run_skill",
                "arguments": {"skill_command": s, "cwd": str(tmp_path)},
            }
        }
        for s in ("/one", "/two")
    ]
    orchestrator = json.dumps({"steps": [*calls, {"result": "recipe_outcome=failure"}]})
    env = {**os.environ, **agent_env(tmp_path), "EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR": orchestrator}
    caller = CallerContext(session_id=None, kind=None)

    async with open_runtime(settings, env=env) as runtime:
        await DispatchService(runtime).dispatch("nightly", "a", "agentic", {}, caller=caller, cwd=tmp_path)

    assert [prompt for prompt in launched(tmp_path) if prompt.startswith("/")] == ["/one"]
    transcripts = "".join(path.read_text() for path in settings.claude_config_dir.rglob("*.jsonl"))
    # Spent: the first step's $0.02, and the orchestrator's own tokens so far (priced: it is still running).
    assert "campaign nightly has spent $0.02" in transcripts
    assert "of its $0.02 budget: nothing more of it is launched" in transcripts
