"""``expeditor recipe validate | list | run | show``: the command line's recipe commands.

Each handler imports what it runs when it runs, so ``expeditor --help`` stays as quick as the rest.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from expeditor.config import Settings

__all__ = ["add_recipe_commands"]

SettingsOf = Callable[[argparse.Namespace], Settings]


def add_recipe_commands(commands: Any, settings_of: SettingsOf) -> None:
    """Add ``expeditor recipe …`` to ``commands`` (argparse's subparsers); ``settings_of(args)`` loads settings."""
    recipe = commands.add_parser(
        "recipe",
        help="run, list, show and validate recipes",
        description="Recipes are YAML jobs of steps (bundled, or in <home>/recipes).",
    )
    recipe_commands = recipe.add_subparsers(dest="recipe_command", required=True, metavar="ACTION")
    validate = recipe_commands.add_parser(
        "validate",
        help="report every problem in recipe files",
        description="Check recipe files and report every problem at once, with file, line, step and field.",
    )
    validate.add_argument("files", nargs="+", help="recipe files or directories of *.yaml")
    validate.set_defaults(handler=functools.partial(_recipe_validate, settings_of))
    listing = recipe_commands.add_parser(
        "list", help="bundled and project recipes", description="List bundled and project recipes."
    )
    listing.add_argument("--json", action="store_true", help="print the recipes as a JSON list")
    listing.set_defaults(handler=functools.partial(_recipe_list, settings_of))
    run = recipe_commands.add_parser(
        "run",
        help="run a recipe's steps here, recorded so that rerunning the same command resumes",
        description="Run a recipe as a pipeline: each step is a managed session (or command), recorded in the "
        "campaign store. Rerunning the same command resumes at the first step that did not finish; a job that "
        "already succeeded returns at once.",
    )
    run.add_argument("name", help="recipe name (expeditor recipe list)")
    run.add_argument("--input", action="append", default=[], metavar="KEY=VALUE", help="a recipe input")
    run.add_argument("--campaign", help="campaign id (default: derived from the recipe, its inputs and --cwd)")
    run.add_argument("--job", help="the job's name within the campaign (default: the recipe's name)")
    run.add_argument("--cwd", help="project directory the steps work in (default: the first allowed root)")
    run.add_argument("--force", action="store_true", help="forget recorded steps and run the job from the start")
    run.add_argument("--dispatched", action="store_true", help=argparse.SUPPRESS)
    run.add_argument("--output-format", choices=("text", "stream-json"), default="text", help=argparse.SUPPRESS)
    run.set_defaults(handler=functools.partial(_recipe_run, settings_of))
    show = recipe_commands.add_parser(
        "show",
        help="a recipe's inputs and steps, with resolved settings",
        description="Show a recipe's inputs and steps with each step's effective model, thresholds and routes.",
    )
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print the recipe and each step's settings as JSON")
    show.set_defaults(handler=functools.partial(_recipe_show, settings_of))


def _recipe_validate(settings_of: SettingsOf, args: argparse.Namespace) -> int:
    from expeditor.recipes.commands import validate_recipes

    return validate_recipes([Path(path) for path in args.files], sys.stdout)


def _recipe_list(settings_of: SettingsOf, args: argparse.Namespace) -> int:
    from expeditor.recipes.commands import list_recipes

    return list_recipes(settings_of(args), sys.stdout, as_json=args.json)


def _recipe_run(settings_of: SettingsOf, args: argparse.Namespace) -> int:
    from expeditor.recipes.commands import parse_inputs
    from expeditor.recipes.run import RecipeRun, run_recipe

    request = RecipeRun(
        recipe=args.name,
        inputs=parse_inputs(args.input),
        campaign_id=args.campaign,
        job_name=args.job,
        cwd=Path(args.cwd) if args.cwd else None,
        force=args.force,
        dispatched=args.dispatched,
        stream_json=args.output_format == "stream-json",
    )
    return run_recipe(settings_of(args), request)


def _recipe_show(settings_of: SettingsOf, args: argparse.Namespace) -> int:
    from expeditor.recipes.commands import show_recipe

    return show_recipe(settings_of(args), args.name, sys.stdout, as_json=args.json)
