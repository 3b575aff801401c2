"""``expeditor recipe validate|list|show`` and the ``--input KEY=VALUE`` flags: exit codes, output to ``out``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from expeditor.config import Settings
from expeditor.errors import InvalidInput
from expeditor.recipes.loader import RecipeEntry, RecipeLibrary
from expeditor.recipes.problems import RecipeError
from expeditor.recipes.schema import Recipe
from expeditor.recipes.validation import parse_recipe, recipe_file_problems
from expeditor.runs.worktrees import Isolation

__all__ = ["list_recipes", "parse_inputs", "show_recipe", "validate_recipes"]

EXIT_OK = 0
EXIT_PROBLEMS = 1


def validate_recipes(paths: Sequence[Path], out: TextIO) -> int:
    """Check every file (a directory stands for its ``*.yaml``); list every problem; 1 if there is any.

    InvalidInput when the paths hold no recipe file at all: that is a usage error, not a failed check.
    """
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    if not files:
        given = ", ".join(str(path) for path in paths)
        raise InvalidInput(f"no recipe files in {given}: expected FILE.yaml or a directory of them")
    total = 0
    failed = 0
    for path in files:
        problems = recipe_file_problems(path)
        if problems:
            failed += 1
            total += len(problems)
            out.writelines(f"{problem}\n" for problem in problems)
        else:
            out.write(f"{path}: ok\n")
    files_word = "file" if len(files) == 1 else "files"
    if not failed:
        out.write(f"{len(files)} recipe {files_word} valid\n")
        return EXIT_OK
    out.write(f"{total} problem{'s' if total != 1 else ''} in {failed} of {len(files)} recipe {files_word}\n")
    return EXIT_PROBLEMS


def list_recipes(settings: Settings, out: TextIO, *, as_json: bool = False) -> int:
    """Name, source and description of every recipe: JSON, a table on a terminal, or columns of text."""
    library = RecipeLibrary.from_settings(settings)
    entries = library.entries()
    if as_json:
        listing = [_listing(library, entry) for entry in entries]
        out.write(json.dumps(listing, indent=2) + "\n")
        return EXIT_OK
    rows = [(entry.name, entry.source_label, _summary(library, entry)) for entry in entries]
    if out.isatty():
        table = Table("Name", "Source", "Description")
        for row in rows:
            table.add_row(*row)
        Console(file=out).print(table)
        return EXIT_OK
    widths = [max(len(row[column]) for row in [("NAME", "SOURCE", ""), *rows]) for column in range(2)]
    out.write(f"{'NAME':<{widths[0]}}  {'SOURCE':<{widths[1]}}  DESCRIPTION\n")
    out.writelines(f"{name:<{widths[0]}}  {source:<{widths[1]}}  {text}\n" for name, source, text in rows)
    return EXIT_OK


def _summary(library: RecipeLibrary, entry: RecipeEntry) -> str:
    try:
        return " ".join(library.load_entry(entry).description.split())
    except RecipeError as exc:
        count = len(exc.problems) or 1
        plural = "s" if count != 1 else ""
        return f"(invalid: {count} problem{plural}; run: expeditor recipe validate {entry.location})"


def _listing(library: RecipeLibrary, entry: RecipeEntry) -> dict[str, Any]:
    """One recipe of ``recipe list --json``: an invalid one has no description but its problems."""
    try:
        description: str | None = " ".join(library.load_entry(entry).description.split())
        problems: list[str] = []
    except RecipeError as exc:
        description = None
        problems = [str(problem) for problem in exc.problems] or [str(exc)]
    return {
        "name": entry.name,
        "source": entry.source.value,
        "overrides_bundled": entry.overrides_bundled,
        "location": entry.location,
        "description": description,
        "problems": problems,
    }


def show_recipe(settings: Settings, name: str, out: TextIO, *, as_json: bool = False) -> int:
    """The recipe called ``name``: its source, its inputs, and each step with its effective settings.

    An unknown name raises UnknownRecipe, a recipe with problems BrokenRecipe (both listing what is wrong).
    """
    library = RecipeLibrary.from_settings(settings)
    entry = library.find(name)
    recipe = parse_recipe(library.read_text(entry), source=entry.location, expected_name=entry.name)
    out.write(
        json.dumps(_as_json(recipe, entry, settings), indent=2) + "\n" if as_json else _render(recipe, entry, settings)
    )
    return EXIT_OK


def _as_json(recipe: Recipe, entry: RecipeEntry, settings: Settings) -> dict[str, Any]:
    """The recipe as written (``required`` resolved), with its source and each step's effective settings and routes."""
    document = recipe.model_dump(mode="json")
    document["source"] = {"kind": entry.source.value, "location": entry.location}
    for input_name, spec in recipe.inputs.items():
        document["inputs"][input_name]["required"] = spec.is_required
    for step_name, step in document["steps"].items():
        effective = recipe.step_settings(step_name, settings)
        step["effective"] = {
            "model": effective.model,
            "stale_threshold": effective.stale_threshold,
            "timeout": effective.timeout,
            "on_success": recipe.route(step_name, "success"),
            "on_failure": recipe.route(step_name, "failure"),
        }
    return document


def parse_inputs(pairs: Sequence[str]) -> dict[str, str]:
    """``--input KEY=VALUE`` flags as a mapping; InvalidInput naming the first flag that is not one."""
    inputs: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--input {pair!r} is not key=value: expected e.g. --input problem='tests hang'")
        inputs[key] = value
    return inputs


def _render(recipe: Recipe, entry: RecipeEntry, settings: Settings) -> str:
    lines = [
        f"{recipe.name} (version {recipe.version}, orchestrator: {recipe.orchestrator}"
        + (f", isolation: {recipe.isolation})" if recipe.isolation is not Isolation.NONE else ")"),
        f"source: {entry.source_label}, {entry.location}",
        "",
        " ".join(recipe.description.split()),
        "",
        "inputs:" if recipe.inputs else "inputs: none",
    ]
    for input_name, spec in recipe.inputs.items():
        how = "required" if spec.is_required else f"default {spec.default or ''!r}"
        lines.append(f"  {input_name} ({how}): {' '.join(spec.description.split())}")
    lines += ["", "steps:"]
    for index, (step_name, step) in enumerate(recipe.steps.items(), 1):
        effective = recipe.step_settings(step_name, settings)
        command = step.skill if step.skill is not None else "run: " + " ".join(step.run or ())
        lines.append(f"  {index}. {step_name}: {command}")
        lines.append(
            f"     model {effective.model or 'CLI default'}, "
            f"stale_threshold {effective.stale_threshold:g} s, timeout {effective.timeout:g} s"
        )
        extras = [
            f"when {step.when.describe()}" if step.when is not None else "",
            f"captures {', '.join(step.capture_names)}" if step.capture_names else "",
            "answer checked against its output_schema" if step.output_schema is not None else "",
            f"retries {step.retries}" if step.retries else "",
            f"at most {step.max_visits} runs" if step.max_visits is not None else "",
        ]
        if any(extras):
            lines.append("     " + "; ".join(extra for extra in extras if extra))
        success, failure = recipe.route(step_name, "success"), recipe.route(step_name, "failure")
        lines.append(f"     on success: {success}; on failure: {failure}")
    return "\n".join(lines) + "\n"
