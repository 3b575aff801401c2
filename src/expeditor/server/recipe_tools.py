"""The recipe tools: what a caller can dispatch, and whether a recipe it wrote is valid."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from pydantic import BaseModel

from expeditor.recipes import RecipeError, RecipeLibrary
from expeditor.recipes.validation import recipe_problems
from expeditor.server.boundary import tool_errors
from expeditor.server.state import ServerState

__all__ = ["RecipeSummary", "RecipeValidation", "register_recipe_tools"]


class RecipeSummary(BaseModel):
    name: str
    description: str
    source: str
    inputs: dict[str, str]
    steps: list[str]


class RecipeValidation(BaseModel):
    valid: bool
    problems: list[str]


def _library(ctx: Context) -> RecipeLibrary:
    return RecipeLibrary.from_settings(ServerState.of(ctx).settings)


def register_recipe_tools(server: MCPServer[Any]) -> None:
    @server.tool()
    async def list_recipes(ctx: Context) -> list[RecipeSummary]:
        """The recipes `dispatch` accepts (bundled with expeditor and the project's own), with their inputs
        (name and what it is for) and their steps in order."""
        with tool_errors("list_recipes"):
            library = _library(ctx)
            summaries: list[RecipeSummary] = []
            for entry in library.entries():
                try:
                    recipe = library.load_entry(entry)
                except RecipeError as exc:
                    summaries.append(
                        RecipeSummary(
                            name=entry.name,
                            description=f"(invalid: {exc})",
                            source=entry.source_label,
                            inputs={},
                            steps=[],
                        )
                    )
                    continue
                summaries.append(
                    RecipeSummary(
                        name=recipe.name,
                        description=recipe.description,
                        source=entry.source_label,
                        inputs={name: spec.description or "" for name, spec in recipe.inputs.items()},
                        steps=list(recipe.steps),
                    )
                )
            return summaries

    @server.tool()
    async def validate_recipe(text: str, ctx: Context, name: str | None = None) -> RecipeValidation:
        """Check a recipe written as YAML `text` (and, if given, that its name is `name`) before saving or
        dispatching it: every problem is listed at once, each naming the step and field and saying what
        was expected."""
        with tool_errors("validate_recipe"):
            problems = recipe_problems(text, source=f"{name or 'recipe'}.yaml", expected_name=name)
        return RecipeValidation(valid=not problems, problems=[str(problem) for problem in problems])
