"""``expeditor recipe validate|list|show``: plain functions returning an exit code, writing to ``out``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.table import Table

from expeditor.config import Settings
from expeditor.recipes.loader import RecipeEntry, RecipeLibrary
from expeditor.recipes.problems import RecipeError
from expeditor.recipes.schema import Recipe
from expeditor.recipes.validation import parse_recipe, recipe_file_problems

__all__ = ["list_recipes", "show_recipe", "validate_recipes"]

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def validate_recipes(paths: Sequence[Path], out: TextIO) -> int:
    """Check every file (a directory stands for its ``*.yaml``); list every problem; 1 if there is any."""
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    if not files:
        out.write("no recipe files given (expected FILE.yaml or a directory of them)\n")
        return EXIT_USAGE
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


def list_recipes(settings: Settings, out: TextIO) -> int:
    """Name, source and description of every recipe; a table on a terminal, columns of text otherwise."""
    library = RecipeLibrary.from_settings(settings)
    try:
        entries = library.entries()
    except RecipeError as exc:
        out.write(f"{exc}\n")
        return EXIT_PROBLEMS
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


def show_recipe(settings: Settings, name: str, out: TextIO) -> int:
    """The recipe called ``name``: its source, its inputs, and each step with its effective settings."""
    library = RecipeLibrary.from_settings(settings)
    try:
        entry = library.find(name)
        recipe = parse_recipe(library.read_text(entry), source=entry.location, expected_name=entry.name)
    except RecipeError as exc:
        out.write(f"{exc}\n")
        return EXIT_PROBLEMS
    out.write(_render(recipe, entry, settings))
    return EXIT_OK


def _render(recipe: Recipe, entry: RecipeEntry, settings: Settings) -> str:
    lines = [
        f"{recipe.name} (version {recipe.version}, orchestrator: {recipe.orchestrator})",
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
            f"captures {', '.join(step.capture)}" if step.capture else "",
            f"retries {step.retries}" if step.retries else "",
            f"at most {step.max_visits} runs" if step.max_visits is not None else "",
        ]
        if any(extras):
            lines.append("     " + "; ".join(extra for extra in extras if extra))
        success, failure = recipe.route(step_name, "success"), recipe.route(step_name, "failure")
        lines.append(f"     on success: {success}; on failure: {failure}")
    return "\n".join(lines) + "\n"
