"""A step's output_schema: checked with the recipe, passed to Claude Code as given, stated in the prompt."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from expeditor.config import load_settings
from expeditor.executor import RunRequest, build_command
from expeditor.executor.stream import StreamState
from expeditor.executor.structured_output import output_mismatch
from expeditor.recipes import orchestrator_prompt, parse_recipe, recipe_problems
from expeditor.usage.stream_json import decode_event

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"verdict": {"enum": ["approve", "changes"]}, "findings": {"type": "array"}},
    "required": ["verdict"],
}
HEADER = """\
name: sample
description: A recipe to break.
inputs:
  topic: {description: What to work on.}
steps:
"""
"""Five lines: the steps below start on line 6."""


def recipe(steps: str) -> str:
    return HEADER + textwrap.indent(textwrap.dedent(steps), "  ")


def problems_of(steps: str) -> list[str]:
    return [str(problem) for problem in recipe_problems(recipe(steps), source="r/sample.yaml", expected_name="sample")]


BROKEN: list[tuple[str, str, str]] = [
    (
        "not a JSON Schema",
        "review:\n  skill: /review\n  output_schema: {type: object, properties: {n: {type: integr}}}\n",
        "r/sample.yaml:8: step 'review', field 'output_schema': is not a valid JSON Schema: "
        "'integr' is not valid under any of the given schemas at /properties/n/type",
    ),
    (
        "not an object",
        "review:\n  skill: /review\n  output_schema: {type: string}\n",
        "r/sample.yaml:8: step 'review', field 'output_schema': must describe a JSON object",
    ),
    (
        "a capture the schema does not have",
        f"review:\n  skill: /review\n  capture: [verdit]\n  output_schema: {json.dumps(SCHEMA)}\n",
        "r/sample.yaml:8: step 'review', field 'capture[0]': 'verdit' is not a property of the step's "
        "output_schema, where captures come from; expected one of: verdict, findings; did you mean 'verdict'?",
    ),
    (
        "a property that would overwrite an input",
        "review:\n  skill: /review\n  output_schema: {type: object, properties: {topic: {}}}\n",
        "r/sample.yaml:8: step 'review', field 'output_schema': has property 'topic', which is also an input's "
        "name; expected 'capture' listing the properties to keep",
    ),
    (
        "on a command",
        "review:\n  run: [ls]\n  output_schema: {type: object}\n",
        "r/sample.yaml:6: step 'review': has 'output_schema' on a 'run' command, which has no structured output",
    ),
    (
        # Not a schema, but the same rule: only a skill step's session takes it, so it would bound nothing.
        "a session budget on a command",
        "review:\n  run: [ls]\n  max_budget_usd: 0.5\n",
        "r/sample.yaml:6: step 'review': has 'max_budget_usd' on a 'run' command, which costs nothing",
    ),
]


@pytest.mark.parametrize(("steps", "expected"), [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN])
def test_a_bad_output_schema_is_one_line_at_its_place(steps: str, expected: str) -> None:
    problems = problems_of(steps)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected)


def test_without_a_capture_list_every_top_level_property_is_captured() -> None:
    steps = f"""\
    review:
      skill: /review
      output_schema: {json.dumps(SCHEMA)}
    fix:
      skill: /fix {{findings}}
      when: {{capture: verdict, equals: changes}}
    """
    assert problems_of(steps) == []
    parsed = parse_recipe(recipe(steps), source="sample.yaml")
    assert parsed.steps["review"].capture_names == ("verdict", "findings")


def test_the_orchestrator_prompt_states_each_steps_result_schema_and_its_captures() -> None:
    steps = f"""\
    review:
      skill: /review {{topic}}
      output_schema: {json.dumps(SCHEMA)}
    """
    prompt = orchestrator_prompt(parse_recipe(recipe(steps), source="sample.yaml"), {"topic": "x"})
    block = prompt[prompt.index("1. review") :]
    assert f"   result schema: {json.dumps(SCHEMA, separators=(',', ':'))}\n   captures: verdict, findings\n" in block
    assert "- output_schema: the step's result schema, exactly as the step gives it" in prompt


def test_the_schema_reaches_the_command_line_as_compact_json(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", claude_command="/opt/claude", allowed_roots=(tmp_path,))
    request = RunRequest(prompt="/review", cwd=tmp_path, output_schema=SCHEMA)
    argv = build_command(settings, request, "sid-1", mcp_config=None)
    given = argv[argv.index("--json-schema") + 1]
    assert json.loads(given) == SCHEMA
    assert " " not in given
    plain = build_command(settings, RunRequest(prompt="/review", cwd=tmp_path), "sid-1", mcp_config=None)
    assert "--json-schema" not in plain


def test_a_request_with_a_schema_that_is_not_one_is_refused_before_launch(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"output_schema\n.*is not a valid JSON Schema"):
        RunRequest(prompt="/review", cwd=tmp_path, output_schema={"type": "object", "required": "verdict"})


def test_a_mismatch_names_the_first_problem_where_it_is_and_counts_the_rest() -> None:
    assert output_mismatch({"verdict": "approve"}, SCHEMA) is None
    assert output_mismatch({"verdict": "ok", "findings": 3}, SCHEMA) == (
        "'ok' is not one of ['approve', 'changes'] at /verdict (and 1 more problem)"
    )
    assert output_mismatch({}, SCHEMA) == "'verdict' is a required property at the top"
    long = output_mismatch({"verdict": "x" * 5000}, SCHEMA) or ""
    assert len(long) < 400
    assert long.endswith("' is not one of ['approve', 'changes'] at /verdict")


def test_the_structured_answer_is_read_from_the_result_event_and_always_encodes() -> None:
    line = json.dumps(
        {
            "type": "result",
            "subtype": "success",
            "result": "{}",
            "structured_output": {"verdict": "ok \ud800", "n": [1]},
        }
    ).encode()
    state = StreamState()
    event = decode_event(line)
    assert event is not None
    state.handle(event)
    assert state.result is not None
    answer = state.result.structured_output
    assert answer is not None
    assert answer["n"] == [1]
    json.dumps(answer).encode()  # no lone surrogate survives
    assert answer["verdict"].encode("utf-8")
    state.handle({"type": "result", "subtype": "success", "result": "x", "structured_output": "not an object"})
    assert state.result.structured_output is None
