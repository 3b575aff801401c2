"""The recipe tools: what a caller can dispatch, and whether a recipe it wrote is valid."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult
from pydantic import BaseModel, Field

from expeditor.recipes import RecipeError, RecipeLibrary
from expeditor.recipes.validation import recipe_problems
from expeditor.server.boundary import tool_errors
from expeditor.server.declare import READ_ONLY, tool
from expeditor.server.results import lines, tool_result
from expeditor.server.state import ServerState

__all__ = ["RecipeList", "RecipeSummary", "RecipeValidation", "register_recipe_tools"]


class RecipeSummary(BaseModel):
    name: str = Field(description="What dispatch's `recipe` argument takes.")
    description: str = Field(description="What the recipe does; '(invalid: ...)' for a recipe that cannot load.")
    source: str = Field(description="Where it comes from: bundled with expeditor, or the project's own file.")
    inputs: dict[str, str] = Field(description="The inputs dispatch passes it, each with what it is for.")
    steps: list[str] = Field(description="Its steps, in order.")


class RecipeList(BaseModel):
    recipes: list[RecipeSummary] = Field(description="Every recipe dispatch accepts, by name.")


class RecipeValidation(BaseModel):
    valid: bool = Field(description="True when the recipe has no problem and can be dispatched.")
    problems: list[str] = Field(description="Every problem, each naming the step and field and what was expected.")


def _library(ctx: Context) -> RecipeLibrary:
    return RecipeLibrary.from_settings(ServerState.of(ctx).settings)


def _recipe_text(recipe: RecipeSummary) -> str:
    inputs = ", ".join(f"{name} ({what})" if what else name for name, what in recipe.inputs.items()) or "none"
    steps = " -> ".join(recipe.steps) or "none"
    return f"{recipe.name} ({recipe.source}): {recipe.description}\n  inputs: {inputs}\n  steps: {steps}"


def register_recipe_tools(server: MCPServer[Any]) -> None:
    @tool(server, title="List recipes", annotations=READ_ONLY)
    async def list_recipes(ctx: Context) -> Annotated[CallToolResult, RecipeList]:
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
        text = lines((_recipe_text(summary) for summary in summaries), empty="no recipes found")
        return tool_result(text, RecipeList(recipes=summaries))

    @tool(server, title="Validate a recipe", annotations=READ_ONLY)
    async def validate_recipe(
        text: Annotated[str, Field(description="The recipe, written as YAML.")],
        ctx: Context,
        name: Annotated[
            str | None, Field(description="The name the recipe must have (its file name without .yaml), if any.")
        ] = None,
    ) -> Annotated[CallToolResult, RecipeValidation]:
        """Check a recipe written as YAML `text` (and, if given, that its name is `name`) before saving or
        dispatching it: every problem is listed at once, each naming the step and field and saying what
        was expected."""
        with tool_errors("validate_recipe"):
            problems = recipe_problems(text, source=f"{name or 'recipe'}.yaml", expected_name=name)
        found = [str(problem) for problem in problems]
        verdict = "valid" if not found else f"{len(found)} problem{'s' if len(found) > 1 else ''}:"
        return tool_result("\n".join([verdict, *found]), RecipeValidation(valid=not found, problems=found))
