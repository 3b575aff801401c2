"""The README stays true: its settings table names every setting, and its first screen has the two commands."""

from __future__ import annotations

from pathlib import Path

from expeditor.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_settings_table_names_every_setting() -> None:
    text = README.read_text()
    table = text[text.index("## Settings") :]
    missing = [name for name in Settings.model_fields if f"`{name}`" not in table]
    assert missing == []


def test_the_first_screen_gives_the_install_and_demo_command_then_the_test_command() -> None:
    first_screen = "\n".join(README.read_text().splitlines()[:30])
    assert "pip install -e '.[test]' && .venv/bin/expeditor demo" in first_screen
    assert ".venv/bin/python -m pytest" in first_screen


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (README.parent / ".ci" / "run").read_text()
    assert "\n.venv/bin/python -m pytest\n" in ci


def test_every_example_command_line_parses_and_names_real_recipes_and_inputs() -> None:
    import shlex

    from expeditor.cli import _parser  # pyright: ignore[reportPrivateUsage]
    from expeditor.recipes import RecipeLibrary

    blocks = README.read_text().split("```")[1::2]  # the insides of the fenced code blocks
    lines = [line for block in blocks for line in block.splitlines()]
    commands = [line.split(" # ")[0].strip() for line in lines if line.startswith("expeditor ")]
    assert len(commands) >= 8
    library = RecipeLibrary()
    for command in commands:
        args = _parser().parse_args(shlex.split(command)[1:])
        recipe = getattr(args, "recipe", None) if args.command_name == "dispatch" else None
        if args.command_name == "recipe" and args.recipe_command in ("run", "show"):
            recipe = args.name
        if recipe is not None and not recipe.isupper():  # NAME stands for any recipe
            spec = library.load(recipe)
            given = [pair.partition("=")[0] for pair in getattr(args, "input", [])]
            assert set(given) <= set(spec.inputs), f"{command}: {recipe} takes {sorted(spec.inputs)}"
            assert {name for name, spec_input in spec.inputs.items() if spec_input.is_required} <= set(given) or (
                args.command_name == "recipe" and args.recipe_command == "show"
            ), command


def test_every_file_the_readme_names_is_in_the_repository() -> None:
    import re

    package = README.parent / "src" / "expeditor"
    named = set(re.findall(r"`([\w./-]+\.(?:md|py)|(?:src|bench|docs|tests|\.ci)/[\w./-]*)`", README.read_text()))
    missing = [
        name
        for name in sorted(named)
        if not (README.parent / name).exists() and not (package / name).exists() and not any(package.rglob(name))
    ]
    assert missing == []
