"""Recipes: schema, validation, loader, orchestrator prompt and the bundled recipes.

The CLI's ``expeditor recipe validate|list|show`` live in :mod:`expeditor.recipes.commands`.
"""

from expeditor.recipes.captures import extract_captures
from expeditor.recipes.conditions import Condition
from expeditor.recipes.loader import RecipeEntry, RecipeLibrary, RecipeSource
from expeditor.recipes.placeholders import placeholder_names, substitute, substitute_argv
from expeditor.recipes.problems import BrokenRecipe, RecipeError, RecipeProblem, UnknownRecipe
from expeditor.recipes.prompt import RUN_SKILL_TOOL, orchestrator_prompt
from expeditor.recipes.schema import (
    FAIL,
    STOP,
    TERMINALS,
    Defaults,
    InputSpec,
    Orchestrator,
    Outcome,
    Recipe,
    Step,
    StepSettings,
    validate_recipe_name,
)
from expeditor.recipes.validation import load_recipe_file, parse_recipe, recipe_file_problems, recipe_problems

__all__ = [
    "FAIL",
    "RUN_SKILL_TOOL",
    "STOP",
    "TERMINALS",
    "BrokenRecipe",
    "Condition",
    "Defaults",
    "InputSpec",
    "Orchestrator",
    "Outcome",
    "Recipe",
    "RecipeEntry",
    "RecipeError",
    "RecipeLibrary",
    "RecipeProblem",
    "RecipeSource",
    "Step",
    "StepSettings",
    "UnknownRecipe",
    "extract_captures",
    "load_recipe_file",
    "orchestrator_prompt",
    "parse_recipe",
    "placeholder_names",
    "recipe_file_problems",
    "recipe_problems",
    "substitute",
    "substitute_argv",
    "validate_recipe_name",
]
