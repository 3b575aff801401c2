"""Load a YAML document together with the line of every key, so problems can point at lines.

The composer gives each node its start mark; walking the node tree once records, for every
path into the document, the line where that key or item starts. Duplicate keys, which a
plain ``yaml.safe_load`` silently collapses (dropping a step), are reported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from expeditor.recipes.problems import BrokenRecipe, Location, RecipeProblem

__all__ = ["YamlDocument", "load_yaml"]


@dataclass(frozen=True)
class YamlDocument:
    """The parsed data, the line of each path in it, and the problems seen while reading."""

    source: str
    data: Any
    lines: dict[Location, int] = field(default_factory=lambda: {(): 1})
    problems: tuple[RecipeProblem, ...] = ()

    def line_of(self, location: Location) -> int | None:
        """The line of ``location`` or, when it is absent (a missing key), of its nearest parent."""
        for end in range(len(location), -1, -1):
            line = self.lines.get(location[:end])
            if line is not None:
                return line
        return None

    def problem(self, location: Location, message: str) -> RecipeProblem:
        return RecipeProblem(self.source, self.line_of(location), location, message)


def load_yaml(text: str, *, source: str) -> YamlDocument:
    """Parse one YAML document with safe constructors; a syntax error raises BrokenRecipe."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        problem = RecipeProblem(source, line, (), f"is not valid YAML: {what}")
        raise BrokenRecipe.from_problems(source, [problem]) from exc
    except yaml.YAMLError as exc:
        problem = RecipeProblem(source, None, (), f"is not valid YAML: {exc}")
        raise BrokenRecipe.from_problems(source, [problem]) from exc
    finally:
        loader.dispose()
    lines: dict[Location, int] = {(): 1}
    problems: list[RecipeProblem] = []
    if node is not None:
        lines[()] = node.start_mark.line + 1
        _walk(node, (), lines, problems, source, set())
    return YamlDocument(source, data, lines, tuple(problems))


def _walk(
    node: yaml.Node,
    path: Location,
    lines: dict[Location, int],
    problems: list[RecipeProblem],
    source: str,
    seen: set[int],
) -> None:
    if id(node) in seen:  # an alias: its content was walked where it was anchored
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in first_line:
                problems.append(
                    RecipeProblem(
                        source,
                        line,
                        (*path, key),
                        f"appears twice (first on line {first_line[key]}); "
                        "expected each key once, YAML would keep only the last",
                    )
                )
                continue
            first_line[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, problems, source, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines, problems, source, seen)
