"""Read a recipe file and report every mistake in it at once, each with file, line, step and field.

Three passes, all reported together and ordered by line: reading the YAML (syntax, duplicate
keys), the schema (each field; see ``schema_errors``), and the rules that span steps (names,
routes, placeholders, ``when`` references, unreachable steps, loops; see ``rules``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from expeditor.recipes.problems import BrokenRecipe, RecipeError, RecipeProblem
from expeditor.recipes.rules import cross_step_problems
from expeditor.recipes.schema import Recipe
from expeditor.recipes.schema_errors import schema_problems
from expeditor.recipes.yamlsource import load_yaml

__all__ = ["load_recipe_file", "parse_recipe", "recipe_file_problems", "recipe_problems"]


def parse_recipe(text: str, *, source: str, expected_name: str | None = None) -> Recipe:
    """The recipe in ``text``, or BrokenRecipe listing every problem (``source`` names the file)."""
    recipe, problems = _check(text, source=source, expected_name=expected_name)
    if problems or recipe is None:
        raise BrokenRecipe.from_problems(source, problems)
    return recipe


def recipe_problems(text: str, *, source: str, expected_name: str | None = None) -> list[RecipeProblem]:
    """Every problem in ``text``; empty when the recipe is valid."""
    try:
        return _check(text, source=source, expected_name=expected_name)[1]
    except RecipeError as exc:
        return list(exc.problems)


def load_recipe_file(path: Path) -> Recipe:
    """Read and validate one recipe file; its ``name`` must equal the file name without ``.yaml``."""
    return parse_recipe(_read(path), source=str(path), expected_name=path.stem)


def recipe_file_problems(path: Path) -> list[RecipeProblem]:
    """Every problem in the recipe file at ``path``, including not being readable."""
    try:
        text = _read(path)
    except RecipeError as exc:
        return list(exc.problems)
    return recipe_problems(text, source=str(path), expected_name=path.stem)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = RecipeProblem(str(path), None, (), f"cannot be read: {exc}")
        raise BrokenRecipe.from_problems(str(path), [problem]) from exc


def _check(text: str, *, source: str, expected_name: str | None) -> tuple[Recipe | None, list[RecipeProblem]]:
    doc = load_yaml(text, source=source)
    problems = list(doc.problems)
    if not isinstance(doc.data, dict):
        problems.append(doc.problem((), "expected a mapping with name, description, steps and optional inputs"))
        return None, problems
    data: dict[Any, Any] = doc.data
    recipe: Recipe | None = None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems.extend(schema_problems(exc, doc))
    problems.extend(cross_step_problems(doc, recipe, data, expected_name))
    ordered = sorted(enumerate(problems), key=lambda item: (item[1].line or 0, item[0]))
    return recipe, [problem for _, problem in ordered]
