"""``expeditor recipe validate|list|show``: exit codes and output."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from expeditor.config import Settings
from expeditor.errors import InvalidInput, Unusable
from expeditor.recipes import BrokenRecipe, UnknownRecipe
from expeditor.recipes.commands import list_recipes, show_recipe, validate_recipes

BUNDLED = Path(__file__).parents[2] / "src" / "expeditor" / "recipes" / "bundled"

BROKEN = """\
name: broken
description: Two mistakes.
steps:
  plan:
    skill: /plan {nothing}
    stale_threshold: -1
"""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "demo.yaml").write_text(
        "name: demo\ndescription: >-\n  Project demo,\n  folded.\nsteps:\n  only: {skill: /only}\n",
        encoding="utf-8",
    )
    return Settings(home=tmp_path, stale_threshold=1200, timeout=7200)


def test_validate_passes_the_bundled_recipes_and_exits_zero() -> None:
    out = io.StringIO()
    assert validate_recipes([BUNDLED], out) == 0
    lines = out.getvalue().splitlines()
    assert lines[-1] == "3 recipe files valid"
    assert all(line.endswith(": ok") for line in lines[:-1])


def test_validate_lists_every_problem_of_every_file_and_exits_one(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN, encoding="utf-8")
    good = BUNDLED / "diagnose.yaml"
    out = io.StringIO()
    assert validate_recipes([broken, good, tmp_path / "absent.yaml"], out) == 1
    assert out.getvalue().splitlines() == [
        f"{broken}:5: step 'plan', field 'skill': placeholder {{nothing}} names no input and no capture; "
        "expected one of: none are declared",
        f"{broken}:6: step 'plan', field 'stale_threshold': expected a number of seconds greater than 0, got -1",
        f"{good}: ok",
        f"{tmp_path / 'absent.yaml'}: recipe: cannot be read: [Errno 2] No such file or directory: "
        f"'{tmp_path / 'absent.yaml'}'",
        "3 problems in 2 of 3 recipe files",
    ]


def test_validate_without_files_is_a_usage_error(tmp_path: Path) -> None:
    out = io.StringIO()
    with pytest.raises(InvalidInput) as raised:
        validate_recipes([tmp_path], out)
    assert not isinstance(raised.value, Unusable)  # the command line exits 2 for it
    assert str(raised.value) == f"no recipe files in {tmp_path}: expected FILE.yaml or a directory of them"
    assert out.getvalue() == ""


def test_list_prints_name_source_and_description_as_plain_columns(settings: Settings) -> None:
    out = io.StringIO()
    assert list_recipes(settings, out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["NAME", "SOURCE", "DESCRIPTION"]
    assert lines[1] == "demo            project (overrides bundled)  Project demo, folded."
    assert lines[2].startswith("diagnose        bundled                      Reproduce a reported problem")
    assert lines[3].startswith("implementation  bundled                      Plan, implement, test and review")


def test_list_marks_an_invalid_project_recipe_and_still_lists_the_rest(settings: Settings) -> None:
    (settings.recipes_dir / "broken.yaml").write_text(BROKEN, encoding="utf-8")
    out = io.StringIO()
    assert list_recipes(settings, out) == 0
    broken_line = next(line for line in out.getvalue().splitlines() if line.startswith("broken"))
    assert broken_line.endswith(
        f"(invalid: 2 problems; run: expeditor recipe validate {settings.recipes_dir}/broken.yaml)"
    )


def test_list_draws_a_table_on_a_terminal(settings: Settings) -> None:
    out = Terminal()
    assert list_recipes(settings, out) == 0
    text = out.getvalue()
    for heading in ("Name", "Source", "Description"):
        assert heading in text
    assert "┃" in text or "│" in text
    assert "implementation" in text


def test_show_prints_inputs_and_steps_with_their_effective_settings(settings: Settings) -> None:
    out = io.StringIO()
    assert show_recipe(settings, "diagnose", out) == 0
    text = out.getvalue()
    assert text.startswith("diagnose (version 1, orchestrator: agent)\nsource: bundled, ")
    assert "  problem (required): The symptom as observed" in text
    assert "  work_dir (default '.expeditor/work'): " in text
    assert "  1. reproduce: /expeditor:reproduce-problem {work_dir} {problem}\n" in text
    assert "     model opus, stale_threshold 1200 s, timeout 3600 s\n" in text
    assert "     model opus, stale_threshold 2400 s, timeout 7200 s\n" in text
    assert "     on success: stop; on failure: fail\n" in text


def test_show_an_unknown_recipe_lists_the_available_names_and_is_unusable(settings: Settings) -> None:
    out = io.StringIO()
    with pytest.raises(UnknownRecipe) as raised:
        show_recipe(settings, "diagnos", out)
    assert isinstance(raised.value, Unusable)  # the command line exits 1 for it, not 2
    assert str(raised.value) == (
        "no recipe named 'diagnos'; did you mean 'diagnose'? (available: demo, diagnose, implementation)"
    )
    assert out.getvalue() == ""


def test_show_an_invalid_recipe_names_its_problems_and_is_unusable(settings: Settings) -> None:
    (settings.recipes_dir / "broken.yaml").write_text(BROKEN, encoding="utf-8")
    out = io.StringIO()
    with pytest.raises(BrokenRecipe) as raised:
        show_recipe(settings, "broken", out)
    assert isinstance(raised.value, Unusable)
    assert str(raised.value).startswith(f"{settings.recipes_dir}/broken.yaml: 2 problems\n")
    assert len(raised.value.problems) == 2
    assert out.getvalue() == ""


def test_show_as_json_gives_the_recipe_with_each_steps_effective_settings(settings: Settings) -> None:
    out = io.StringIO()
    assert show_recipe(settings, "diagnose", out, as_json=True) == 0
    shown = json.loads(out.getvalue())
    assert shown["name"] == "diagnose"
    assert shown["source"]["kind"] == "bundled"
    assert shown["inputs"]["problem"]["required"] is True
    assert shown["inputs"]["work_dir"]["required"] is False
    first = next(iter(shown["steps"].values()))
    assert first["effective"] == {
        "model": "opus",
        "stale_threshold": 1200,
        "timeout": 3600,
        "on_success": "investigate",
        "on_failure": "fail",
    }


def test_list_as_json_names_every_recipe_and_an_invalid_ones_problems(settings: Settings) -> None:
    (settings.recipes_dir / "broken.yaml").write_text(BROKEN, encoding="utf-8")
    out = io.StringIO()
    assert list_recipes(settings, out, as_json=True) == 0
    listed = {entry["name"]: entry for entry in json.loads(out.getvalue())}
    assert {"broken", "demo", "diagnose", "implementation"} <= set(listed)
    assert listed["demo"]["source"] == "project"
    assert listed["demo"]["overrides_bundled"] is True
    assert listed["demo"]["description"] == "Project demo, folded."
    assert listed["broken"]["description"] is None
    assert len(listed["broken"]["problems"]) == 2
    assert listed["diagnose"]["problems"] == []
