"""The orchestrator prompt, pinned by a golden file (regenerate with EXPEDITOR_UPDATE_GOLDEN=1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from expeditor.recipes import RUN_SKILL_TOOL, RecipeError, RecipeLibrary, orchestrator_prompt, parse_recipe

GOLDEN = Path(__file__).parent / "data" / "recipes" / "implementation.prompt.txt"
TASK = "Add a --json flag to `status`; keep $(this) and ; rm -rf / literal.\nSecond line of the task."


def test_the_orchestrator_prompt_of_the_implementation_recipe_matches_the_golden_file() -> None:
    prompt = orchestrator_prompt(RecipeLibrary().load("implementation"), {"task": TASK}, cwd="/srv/project")
    if os.environ.get("EXPEDITOR_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(prompt, encoding="utf-8")
    assert prompt == GOLDEN.read_text(encoding="utf-8")


def test_the_prompt_lists_every_input_verbatim_and_every_step_in_order() -> None:
    recipe = RecipeLibrary().load("diagnose")
    prompt = orchestrator_prompt(recipe, {"problem": "it `hangs` $HOME", "work_dir": "w"})
    assert prompt.endswith("problem: it `hangs` $HOME\nwork_dir: w\n")
    assert prompt.index("1. reproduce") < prompt.index("2. investigate")
    assert "model: opus; stale_threshold: 2400; timeout: 7200" in prompt
    assert RUN_SKILL_TOOL in prompt
    for argument in ("skill_command:", "cwd:", "model:", "stale_threshold:", "timeout:"):
        assert f"- {argument}" in prompt


def test_the_prompt_refuses_missing_inputs_and_pipeline_recipes() -> None:
    library = RecipeLibrary()
    with pytest.raises(RecipeError, match="missing required input task"):
        orchestrator_prompt(library.load("implementation"), {})
    with pytest.raises(RecipeError, match="runs on the pipeline runner"):
        orchestrator_prompt(library.load("demo"), {})


def test_settings_no_recipe_sets_are_left_to_the_server() -> None:
    recipe = parse_recipe("name: bare\ndescription: Nothing set.\nsteps:\n  only: {skill: /only}\n", source="bare.yaml")
    prompt = orchestrator_prompt(recipe, {})
    assert "   model: server default; stale_threshold: server default; timeout: server default\n" in prompt
    assert "- cwd: your current working directory, as an absolute path\n" in prompt
    assert prompt.endswith("\n\nInputs: none.\n")


def test_a_steps_budget_is_in_the_prompt_for_the_orchestrator_to_pass_to_run_skill() -> None:
    # An agent orchestrator runs each step through run_skill: a step budget it is never told of is never enforced.
    recipe = parse_recipe(
        "name: b\ndescription: d.\nsteps:\n  a: {skill: /a, max_budget_usd: 0.25}\n  b: {skill: /b}\n", source="b.yaml"
    )
    prompt = orchestrator_prompt(recipe, {})
    assert "- max_budget_usd: the step's budget in USD" in prompt
    assert "   budget: 0.25 USD\n" in prompt
    assert prompt.count("   budget: ") == 1
