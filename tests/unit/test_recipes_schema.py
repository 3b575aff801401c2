"""The recipe model a runner walks: routes, fallbacks, inputs and ``when`` conditions."""

from __future__ import annotations

from pathlib import Path

import pytest

from expeditor.config import Settings
from expeditor.recipes import Condition, Recipe, RecipeError, StepSettings, parse_recipe

TEXT = """\
name: flow
description: A recipe to walk.
inputs:
  topic: {description: What to work on.}
  mode: {default: quick}
  note: {required: false}
defaults:
  model: sonnet
  stale_threshold: 600
steps:
  plan:
    skill: /plan {topic}
    model: opus
    capture: [verdict]
  build:
    skill: /build
    timeout: 90
    on_failure: fix
  fix:
    skill: /fix
    when: {capture: verdict, equals: changes}
    on_success: build
    max_visits: 2
"""


@pytest.fixture
def recipe() -> Recipe:
    return parse_recipe(TEXT, source="flow.yaml", expected_name="flow")


def test_routes_default_to_the_next_step_then_stop_and_failures_to_fail(recipe: Recipe) -> None:
    assert recipe.first_step == "plan"
    assert recipe.route("plan", "success") == "build"
    assert recipe.route("plan", "failure") == "fail"
    assert recipe.route("build", "failure") == "fix"
    assert recipe.route("fix", "success") == "build"
    assert recipe.route("fix", "skipped") == "stop"
    assert recipe.route("build", "skipped") == "fix"


def test_step_settings_fall_back_to_defaults_then_to_settings(recipe: Recipe, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, timeout=7200, stale_threshold=1200, default_model=None)
    assert recipe.step_settings("plan", settings) == StepSettings(model="opus", stale_threshold=600, timeout=7200)
    assert recipe.step_settings("build", settings) == StepSettings(model="sonnet", stale_threshold=600, timeout=90)


def test_inputs_get_defaults_and_optional_ones_are_empty(recipe: Recipe) -> None:
    assert recipe.resolve_inputs({"topic": "t"}) == {"topic": "t", "mode": "quick", "note": ""}


def test_missing_and_unknown_inputs_are_refused_together(recipe: Recipe) -> None:
    with pytest.raises(RecipeError) as caught:
        recipe.resolve_inputs({"mdoe": "full"})
    message = str(caught.value)
    assert "unknown input 'mdoe' (did you mean 'mode'?)" in message
    assert "missing required input topic" in message
    assert message.endswith("its inputs are: topic, mode, note")


CONDITIONS: list[tuple[dict[str, object], bool]] = [
    ({"input": "mode", "equals": "quick"}, True),
    ({"input": "mode", "equals": "full"}, False),
    ({"input": "mode", "in": ["full", "quick"]}, True),
    ({"capture": "verdict", "equals": "approve"}, True),
    ({"capture": "missing", "equals": ""}, False),
    ({"not": {"capture": "missing", "equals": "x"}}, True),
    ({"all": [{"input": "mode", "equals": "quick"}, {"capture": "verdict", "in": ["approve"]}]}, True),
    ({"all": [{"input": "mode", "equals": "quick"}, {"capture": "verdict", "equals": "no"}]}, False),
    ({"any": [{"input": "mode", "equals": "full"}, {"capture": "verdict", "equals": "approve"}]}, True),
    ({"input": "count", "equals": 3}, True),
]


@pytest.mark.parametrize(("raw", "expected"), CONDITIONS)
def test_a_condition_holds_on_inputs_and_captures(raw: dict[str, object], expected: bool) -> None:
    condition = Condition.model_validate(raw)
    assert condition.holds({"mode": "quick", "count": "3"}, {"verdict": "approve"}) is expected


def test_a_condition_describes_itself_and_its_references() -> None:
    condition = Condition.model_validate(
        {"not": {"all": [{"capture": "tests", "in": ["passed", "none"]}, {"input": "mode", "equals": "x"}]}}
    )
    assert condition.describe() == "not (capture tests is one of ['passed', 'none'] and input mode is 'x')"
    assert list(condition.references()) == [("capture", "tests"), ("input", "mode")]
