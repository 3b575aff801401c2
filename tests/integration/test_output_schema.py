"""Captures with a schema: a step's structured answer is checked, captured field by field, or fails the step.

The fake agent answers the way Claude Code 2.1.332 does through ``--json-schema``: the result event
carries ``structured_output``, and its text is the same object as JSON.
"""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import TextContent

from expeditor.ids import new_session_id
from expeditor.recipes import parse_recipe
from expeditor.recipes.pipeline import PipelineJob, PipelineOutcome, PipelineRunner
from expeditor.runs import build_executor
from expeditor.runs.supervisor import Supervisor
from expeditor.server.app import build_server
from expeditor.state import SqliteCampaignStore, StepStatus
from expeditor.testing import read_invocation_log
from tests.support.fake import fake_settings

pytestmark = pytest.mark.anyio

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tests": {"enum": ["passed", "failed", "none"]},
        "failures": {"type": "integer", "minimum": 0},
    },
    "required": ["tests", "failures"],
}


def answering(output: dict[str, Any] | None, *, text: str | None = None) -> str:
    """A skill command whose fake session ends with ``output`` as its structured answer (or only ``text``)."""
    result: dict[str, Any] = {} if output is None else {"structured_output": output}
    if text is not None:
        result["text"] = text
    return "/run-tests " + json.dumps({"steps": [{"assistant": "Ran them."}, {"result": result}]})


def recipe_yaml(steps: str) -> str:
    header = "name: t\ndescription: a test pipeline\norchestrator: pipeline\n"
    return header + f"steps:\n{textwrap.indent(textwrap.dedent(steps), '  ')}"


async def run_steps(tmp_path: Path, steps: str) -> tuple[PipelineOutcome, SqliteCampaignStore]:
    settings = fake_settings(tmp_path)
    recipe = parse_recipe(recipe_yaml(steps), source="t.yaml")
    store = SqliteCampaignStore(settings.state_path)
    supervisor = Supervisor(settings, build_executor(settings), store=store)
    job = PipelineJob(recipe, {}, "c", "j", tmp_path, new_session_id())
    return await PipelineRunner(settings, store, supervisor, job).run(), store


def launched_argvs(log: Path) -> list[list[str]]:
    return [record["argv"] for record in read_invocation_log(log) if record["event"] == "launch"]


async def test_a_matching_structured_answer_is_captured_field_by_field_and_the_schema_reaches_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "agent.log"
    monkeypatch.setenv("EXPEDITOR_FAKE_LOG", str(log))
    steps = f"""\
    test:
      skill: '{answering({"tests": "failed", "failures": 2})}'
      output_schema: {json.dumps(VERDICT_SCHEMA)}
    report:
      skill: '/report {{tests}} {{failures}}'
      when: {{capture: tests, equals: failed}}
    """
    outcome, store = await run_steps(tmp_path, steps)

    assert outcome.status == "success", outcome.reason
    assert outcome.captures == {"tests": "failed", "failures": "2"}
    test, report = store.list_steps("c", "j")
    assert (test.status, test.captures) == (StepStatus.SUCCESS, {"tests": "failed", "failures": "2"})
    assert report.status is StepStatus.SUCCESS
    first, second = launched_argvs(log)
    assert json.loads(first[first.index("--json-schema") + 1]) == VERDICT_SCHEMA
    assert "--json-schema" not in second
    assert second[second.index("-p") + 1] == "/report failed 2"


async def test_an_answer_that_does_not_match_fails_each_attempt_with_the_schema_error_then_takes_on_failure(
    tmp_path: Path,
) -> None:
    steps = f"""\
    test:
      skill: '{answering({"tests": "maybe", "failures": 0})}'
      output_schema: {json.dumps(VERDICT_SCHEMA)}
      retries: 1
      on_failure: triage
    done:
      skill: /done
      on_success: stop
    triage:
      skill: /triage
    """
    outcome, store = await run_steps(tmp_path, steps)

    test, triage = store.list_steps("c", "j")
    assert test.step == "test"
    assert (test.status, test.attempts, test.captures) == (StepStatus.FAILURE, 2, {})
    assert test.reason == (
        "the structured output does not match the step's output_schema: 'maybe' is not one of "
        "['passed', 'failed', 'none'] at /tests"
    )
    assert (triage.step, triage.status) == ("triage", StepStatus.SUCCESS)
    assert outcome.status == "success"
    assert "tests" not in outcome.captures
    # Both sessions themselves ended well: the step failed on their answers alone.
    runs = [(run.status.value, run.reason) for run in store.list_runs("c")]
    assert [status for status, _ in runs] == ["success", "success", "success"], runs


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("All green.", "the session ended without structured output"),
        ('{"tests": "passed"}', "'failures' is a required property at the top"),
    ],
)
async def test_an_answer_without_structured_output_is_judged_by_its_text_or_fails(
    tmp_path: Path, text: str, reason: str
) -> None:
    steps = f"""\
    test:
      skill: '{answering(None, text=text)}'
      output_schema: {json.dumps(VERDICT_SCHEMA)}
    """
    outcome, store = await run_steps(tmp_path, steps)

    (test,) = store.list_steps("c", "j")
    assert test.status is StepStatus.FAILURE
    assert reason in (test.reason or "")
    assert outcome.status == "failure"


async def test_run_skill_passes_the_callers_schema_and_returns_the_structured_answer(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    scenario = {"steps": [{"result": {"structured_output": {"tests": "passed", "failures": 0}}}]}
    env = {
        **os.environ,
        "EXPEDITOR_FAKE_SCENARIO": json.dumps(scenario),
        "EXPEDITOR_FAKE_LOG": str(log),
        "CLAUDE_CODE_SESSION_ID": str(uuid.uuid4()),
    }
    arguments: dict[str, Any] = {"skill_command": "/run-tests", "cwd": str(tmp_path), "output_schema": VERDICT_SCHEMA}
    async with Client(build_server(fake_settings(tmp_path), env=env)) as client:
        ran = await client.call_tool("run_skill", arguments)
        refused = await client.call_tool("run_skill", {**arguments, "output_schema": {"type": "array"}})

    assert not ran.is_error
    assert ran.structured_content is not None
    assert ran.structured_content["structured_output"] == {"tests": "passed", "failures": 0}
    (argv,) = launched_argvs(log)
    assert json.loads(argv[argv.index("--json-schema") + 1]) == VERDICT_SCHEMA
    assert refused.is_error
    text = " ".join(block.text for block in refused.content if isinstance(block, TextContent))
    assert "output_schema" in text
    assert "must describe a JSON object" in text, text
