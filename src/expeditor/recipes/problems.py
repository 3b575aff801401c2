"""What is wrong with a recipe: one problem per mistake, all of them in one error.

A problem knows the file, the line (when the YAML gives one), where in the recipe it is
(``step 'test', field 'on_failure'``) and a sentence saying what was expected, so a typo
is caught when the recipe is written, not when its seventh step runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from expeditor.errors import InvalidInput, Unusable

__all__ = ["BrokenRecipe", "Location", "RecipeError", "RecipeProblem", "UnknownRecipe", "describe_location"]

Location = tuple[str | int, ...]
"""A path into the recipe document, e.g. ``("steps", "test", "on_failure")``."""


def describe_location(location: Location) -> str:
    """``("steps", "test", "when", "all", 0)`` → ``step 'test', field 'when.all[0]'``."""
    if not location:
        return "recipe"
    head, *rest = location
    if head == "steps" and rest:
        return _owner("step", rest)
    if head == "inputs" and rest:
        return _owner("input", rest)
    if head == "defaults" and rest:
        return f"defaults, field {_dotted(rest)!r}"
    return f"field {_dotted(location)!r}"


def _owner(kind: str, rest: Sequence[str | int]) -> str:
    owner, *fields = rest
    text = f"{kind} {str(owner)!r}"
    return f"{text}, field {_dotted(fields)!r}" if fields else text


def _dotted(parts: Sequence[str | int]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclass(frozen=True)
class RecipeProblem:
    """One mistake in one recipe file."""

    source: str
    line: int | None
    location: Location
    message: str

    def __str__(self) -> str:
        place = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{place}: {describe_location(self.location)}: {self.message}"


class RecipeError(InvalidInput):
    """A recipe is malformed, unknown, or cannot run with the values given.

    ``problems`` lists every mistake found in a recipe file (empty for errors that are
    not about a file, such as an unknown recipe name or a missing placeholder value).
    """

    def __init__(self, message: str, problems: Iterable[RecipeProblem] = ()) -> None:
        self.problems: tuple[RecipeProblem, ...] = tuple(problems)
        super().__init__(message)


class UnknownRecipe(RecipeError, Unusable):
    """No recipe has the name asked for."""


class BrokenRecipe(RecipeError, Unusable):
    """A recipe file (or the directory of them) cannot be read or has problems."""

    @classmethod
    def from_problems(cls, source: str, problems: Sequence[RecipeProblem]) -> BrokenRecipe:
        """One error carrying every problem, its message listing them one per line."""
        count = len(problems)
        header = f"{source}: {count} problem{'s' if count != 1 else ''}"
        return cls("\n".join([header, *(f"  {problem}" for problem in problems)]), problems)
