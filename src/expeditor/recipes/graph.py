"""The step graph of a recipe: which steps a run can reach, and loops it can never leave.

Each step has up to three edges: its success route, its failure route, and, when it has a
``when``, the skip to the next step in order. Routes to names that are not steps are left
out here (validation reports them). Recipes are small, so plain searches are enough.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from expeditor.recipes.schema import FAIL, Recipe

__all__ = ["Edge", "closed_loops", "edges", "reachable_from", "unreachable_steps"]


@dataclass(frozen=True)
class Edge:
    """A move a run can make from ``source`` to ``target`` (a step, ``stop`` or ``fail``), and its field."""

    source: str
    target: str
    field: Literal["on_success", "on_failure", "when"]


def edges(recipe: Recipe) -> list[Edge]:
    """Every move a run can make, in step order."""
    found: list[Edge] = []
    for name, step in recipe.steps.items():
        found.append(Edge(name, recipe.route(name, "success"), "on_success"))
        found.append(Edge(name, step.on_failure, "on_failure"))
        if step.when is not None:
            found.append(Edge(name, recipe.route(name, "skipped"), "when"))
    return found


def _successors(recipe: Recipe) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {name: [] for name in recipe.steps}
    for edge in edges(recipe):
        if edge.target in recipe.steps:
            table[edge.source].append(edge.target)
    return table


def reachable_from(recipe: Recipe, start: str) -> set[str]:
    """The steps a run can reach from ``start`` in one or more moves."""
    successors = _successors(recipe)
    seen: set[str] = set()
    queue = deque(successors[start])
    while queue:
        name = queue.popleft()
        if name not in seen:
            seen.add(name)
            queue.extend(successors[name])
    return seen


def unreachable_steps(recipe: Recipe) -> list[str]:
    """Steps no run can reach from the first step, in file order."""
    first = recipe.first_step
    reached = reachable_from(recipe, first) | {first}
    return [name for name in recipe.steps if name not in reached]


def closed_loops(recipe: Recipe) -> list[list[str]]:
    """Loops whose only way out is ``fail``: sets of steps that reach one another, in file order.

    Such a loop either runs forever or fails the run, so it never finishes as a success.
    """
    reach = {name: reachable_from(recipe, name) for name in recipe.steps}
    loops: list[list[str]] = []
    placed: set[str] = set()
    for name in recipe.steps:
        if name in placed or name not in reach[name]:
            continue
        members = [other for other in recipe.steps if other == name or (other in reach[name] and name in reach[other])]
        placed.update(members)
        exits = [
            edge
            for edge in edges(recipe)
            if edge.source in members and edge.target not in members and edge.target != FAIL
        ]
        if not exits:
            loops.append(members)
    return loops
