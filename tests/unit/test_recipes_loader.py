"""The recipe loader: bundled and project recipes, names that never become paths.

The bundled skills the recipes' steps run are checked in test_bundled_skills.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import expeditor.recipes
from expeditor.config import Settings
from expeditor.recipes import (
    Orchestrator,
    RecipeError,
    RecipeLibrary,
    RecipeSource,
    substitute,
)

PROJECT_DEMO = """\
name: demo
description: The project's own demo.
orchestrator: pipeline
steps:
  only:
    run: [echo, hello]
"""


@pytest.fixture
def library(tmp_path: Path) -> RecipeLibrary:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "demo.yaml").write_text(PROJECT_DEMO, encoding="utf-8")
    (recipes / "nightly.yaml").write_text(PROJECT_DEMO.replace("name: demo", "name: nightly"), encoding="utf-8")
    (recipes / "notes.txt").write_text("not a recipe", encoding="utf-8")
    return RecipeLibrary(recipes)


def test_a_project_recipe_overrides_a_bundled_one_and_the_listing_says_so(library: RecipeLibrary) -> None:
    entries = {entry.name: entry for entry in library.entries()}
    assert list(entries) == ["demo", "diagnose", "implementation", "nightly"]
    assert entries["demo"].source is RecipeSource.PROJECT
    assert entries["demo"].overrides_bundled
    assert entries["demo"].source_label == "project (overrides bundled)"
    assert entries["nightly"].source_label == "project"
    assert entries["implementation"].source_label == "bundled"
    assert library.load("demo").description == "The project's own demo."
    assert library.load("implementation").orchestrator is Orchestrator.AGENT


def test_without_a_project_directory_only_bundled_recipes_are_listed(tmp_path: Path) -> None:
    entries = RecipeLibrary(tmp_path / "absent").entries()
    assert [(entry.name, entry.source) for entry in entries] == [
        ("demo", RecipeSource.BUNDLED),
        ("diagnose", RecipeSource.BUNDLED),
        ("implementation", RecipeSource.BUNDLED),
    ]


@pytest.mark.parametrize("name", ["../evil", "recipes/../../evil", "/etc/passwd", ".hidden", "demo.yaml", "", "a b"])
def test_a_name_that_could_leave_the_recipes_directory_is_refused(library: RecipeLibrary, name: str) -> None:
    assert library.project_dir is not None
    (library.project_dir.parent / "evil.yaml").write_text(PROJECT_DEMO.replace("demo", "evil"), encoding="utf-8")
    with pytest.raises(RecipeError, match="is not valid: expected 1 to 64 letters"):
        library.load(name)


def test_an_unknown_name_lists_the_available_ones(library: RecipeLibrary) -> None:
    with pytest.raises(RecipeError) as caught:
        library.load("implemenation")
    assert str(caught.value) == (
        "no recipe named 'implemenation'; did you mean 'implementation'? "
        "(available: demo, diagnose, implementation, nightly)"
    )


def test_an_invalid_project_recipe_fails_with_its_problems(library: RecipeLibrary) -> None:
    assert library.project_dir is not None
    (library.project_dir / "broken.yaml").write_text("name: broken\ndescription: x\nsteps: {}\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"broken\.yaml:3: field 'steps': expected at least one step"):
        library.load("broken")


def test_from_settings_uses_the_recipes_directory_under_home(tmp_path: Path) -> None:
    assert RecipeLibrary.from_settings(Settings(home=tmp_path)).project_dir == tmp_path / "recipes"


def test_the_long_diagnostic_step_has_a_larger_stale_threshold() -> None:
    recipe = RecipeLibrary().load("diagnose")
    assert recipe.steps["investigate"].stale_threshold == 2400


def test_the_implementation_fix_loop_is_bounded() -> None:
    recipe = RecipeLibrary().load("implementation")
    assert list(recipe.steps) == ["plan", "implement", "test", "review", "fix"]
    assert recipe.steps["fix"].max_visits == 3
    assert recipe.route("fix", "success") == "test"
    assert recipe.route("fix", "skipped") == "stop"


def test_the_package_exports_exactly_its_public_names() -> None:
    public = {
        name
        for name, value in vars(expeditor.recipes).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("expeditor.recipes")
    }
    assert public <= set(expeditor.recipes.__all__)
    for name in expeditor.recipes.__all__:
        assert hasattr(expeditor.recipes, name)


def test_the_demo_runs_on_the_pipeline_and_its_commands_need_only_its_inputs_and_earlier_captures() -> None:
    recipe = RecipeLibrary().load("demo")
    assert recipe.orchestrator is Orchestrator.PIPELINE
    values = recipe.resolve_inputs({})
    commands = []
    for step in recipe.steps.values():
        commands.append(substitute(step.skill or "", values))
        values.update({name: f"<{name}>" for name in step.capture})
    assert commands[0] == "/demo-plan a tiny web service"
    assert commands[1] == "/demo-build <plan>"
