"""Budgets and result schemas reaching the real Claude Code CLI (scripted Messages API), end to end.

The CLI is launched through a recorder that writes down its argv and then becomes it, so each test
asserts on the arguments the real CLI ran with, and on what the CLI made of them.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from expeditor.config import Settings
from expeditor.recipes import parse_recipe
from expeditor.recipes.pipeline import PipelineJob, PipelineOutcome, PipelineRunner
from expeditor.runs import build_executor
from expeditor.runs.supervisor import Supervisor
from expeditor.state import SqliteCampaignStore, StepStatus
from tests.support.recording_cli import recorded_argvs, recording_launcher
from tests.support.scripted_messages_api import Reply, ScriptedMessagesAPI, Text, ToolUse, Usage

pytestmark = [pytest.mark.anyio, pytest.mark.real_claude]


async def run_recipe_through_recorder(
    settings: Settings, claude_cli: Path, claude_env: dict[str, str], tmp_path: Path, recipe_text: str
) -> tuple[PipelineOutcome, SqliteCampaignStore, list[list[str]]]:
    """Run the recipe as a pipeline against the real CLI; returns its outcome, its store and every argv."""
    recipe = parse_recipe(recipe_text, source="recipe.yaml")
    launcher, log = recording_launcher(claude_cli, tmp_path)
    recorded = settings.model_copy(update={"claude_command": str(launcher)})
    store = SqliteCampaignStore(recorded.state_path)
    supervisor = Supervisor(recorded, build_executor(recorded, env=claude_env), store=store)
    job = PipelineJob(recipe, recipe.resolve_inputs({}), "c", "j", tmp_path, str(uuid.uuid4()))
    outcome = await PipelineRunner(recorded, store, supervisor, job).run()
    return outcome, store, recorded_argvs(log)


# --- result schemas ----------------------------------------------------------------------

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"tests": {"enum": ["passed", "failed", "none"]}, "failures": {"type": "integer"}},
    "required": ["tests", "failures"],
}
SCHEMA_RECIPE = f"""\
name: verdict
description: test, then report on the verdict
orchestrator: pipeline
steps:
  test:
    skill: Run the tests and give the verdict
    output_schema: {json.dumps(VERDICT_SCHEMA)}
  report:
    skill: Report {{tests}} with {{failures}} failures
"""


async def test_a_real_session_answers_through_the_schema_it_was_given_and_its_fields_are_captured(
    settings: Settings,
    claude_cli: Path,
    claude_env: dict[str, str],
    scripted_api: ScriptedMessagesAPI,
    tmp_path: Path,
) -> None:
    verdict = {"tests": "failed", "failures": 2}
    scripted_api.add(
        Reply((Text("Two tests fail."), ToolUse("StructuredOutput", verdict)), Usage(10, 5)),
        Reply.text("Reported.", Usage(10, 5)),
    )

    outcome, store, argvs = await run_recipe_through_recorder(settings, claude_cli, claude_env, tmp_path, SCHEMA_RECIPE)
    try:
        assert outcome.status == "success", outcome.reason
        assert outcome.captures == {"tests": "failed", "failures": "2"}
        test_argv, report_argv = argvs
        assert json.loads(test_argv[test_argv.index("--json-schema") + 1]) == VERDICT_SCHEMA
        assert "--json-schema" not in report_argv
        # What the CLI made of it: a StructuredOutput tool whose input is our schema; the turn
        # ended at the tool's answer, so the next request is already the report step's.
        test_request, report_request = scripted_api.main_requests
        assert test_request.body is not None
        tools = {tool["name"]: tool for tool in test_request.body["tools"]}
        assert tools["StructuredOutput"]["input_schema"] == VERDICT_SCHEMA
        assert "Report failed with 2 failures" in report_request.text
        test, report = store.list_steps("c", "j")
        assert (test.status, test.captures) == (StepStatus.SUCCESS, {"tests": "failed", "failures": "2"})
        assert report.status is StepStatus.SUCCESS
    finally:
        store.close()


async def test_a_real_session_that_answers_off_schema_until_the_cli_gives_up_fails_with_the_schema_error(
    settings: Settings,
    claude_cli: Path,
    claude_env: dict[str, str],
    scripted_api: ScriptedMessagesAPI,
    tmp_path: Path,
) -> None:
    # 2.1.332 answers each call that does not match with an error tool result, and after 5 such
    # calls (MAX_STRUCTURED_OUTPUT_RETRIES) ends with an error_max_structured_output_retries result.
    off_schema = Reply((ToolUse("StructuredOutput", {"tests": "maybe", "failures": 0}),), Usage(10, 5))
    scripted_api.add(*[off_schema] * 5)

    outcome, store, argvs = await run_recipe_through_recorder(settings, claude_cli, claude_env, tmp_path, SCHEMA_RECIPE)
    try:
        assert outcome.status == "failure"
        (test,) = store.list_steps("c", "j")
        assert test.status is StepStatus.FAILURE
        assert "Failed to provide valid structured output after 5 attempts" in (test.reason or "")
        assert "/tests: must be equal to one of the allowed values" in (test.reason or "")
        assert len(argvs) == 1
        assert scripted_api.remaining == 0
    finally:
        store.close()


# --- budgets -----------------------------------------------------------------------------

BUDGET_RECIPE = """\
name: budgeted
description: a step Claude Code stops at its own budget, then one the job's budget stops before it starts
orchestrator: pipeline
max_budget_usd: 0.02
steps:
  spend:
    skill: Spend freely
    max_budget_usd: 0.01
    on_failure: after
  after:
    skill: Never launched
"""


async def test_the_real_cli_stops_a_step_at_its_budget_and_the_job_budget_stops_the_next_step(
    settings: Settings,
    claude_cli: Path,
    claude_env: dict[str, str],
    scripted_api: ScriptedMessagesAPI,
    tmp_path: Path,
) -> None:
    # A reply that alone costs more than the step's budget, and a second the CLI never asks for:
    # 2.1.332 checks its budget after each turn and ends at the first that reaches it.
    scripted_api.add(
        Reply(
            (Text("Running it."), ToolUse("Bash", {"command": "echo hi", "description": "Say hi"})), Usage(1000, 20000)
        ),
        Reply.text("never sent", Usage(10, 5)),
    )

    outcome, store, argvs = await run_recipe_through_recorder(settings, claude_cli, claude_env, tmp_path, BUDGET_RECIPE)
    try:
        (spend_argv,) = argvs
        assert spend_argv[spend_argv.index("--max-budget-usd") + 1] == "0.01"
        assert len(scripted_api.main_requests) == 1
        (spend,) = store.list_steps("c", "j")
        assert spend.status is StepStatus.FAILURE
        assert spend.reason == (
            "Claude Code stopped the session at its budget (--max-budget-usd): Reached maximum budget ($0.01)"
        )
        (run,) = store.list_runs("c")
        cost = run.usage.total.cost_usd
        assert cost is not None
        assert cost > 0.02  # the CLI's own figure, past both budgets
        # The step's failure routes on to 'after', which the job's budget stops before it launches.
        assert outcome.status == "failure"
        assert outcome.reason.startswith(f"stopped before step 'after': job c/j has spent ${cost:.4g} of its $0.02")
    finally:
        store.close()
