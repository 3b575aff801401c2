"""Imports flow one way, package by package: the graph is drawn from the source with `ast`, never by importing it.

A unit is a top-level subpackage (`executor`, `runs`, …) or a top-level module (`cli`, `config`, …) of
src/expeditor; the package root's own `__init__.py` is the unit `expeditor`. Every import counts: at module
level, inside a function, under `if TYPE_CHECKING:`. The layers are DESIGN's "Imports flow one way":
cli/server → dispatch/recipes → runs → executor/monitor/state → usage model → config/ids/errors.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPOSITORY / "src" / "expeditor"

# unit -> {unit it imports: the first file:line that makes the edge}
Graph = dict[str, dict[str, str]]


def units_of(package_dir: Path) -> set[str]:
    """The units of a package: its top-level subpackages and modules, and its root."""
    found = {package_dir.name}
    for child in package_dir.iterdir():
        if child.is_dir() and (child / "__init__.py").is_file():
            found.add(child.name)
        elif child.suffix == ".py" and child.name != "__init__.py":
            found.add(child.stem)
    return found


def _imported_units(node: ast.Import | ast.ImportFrom, module: list[str], root: str, units: set[str]) -> list[str]:
    """The units one import statement reaches, `module` being the importing module's dotted name, split."""

    def unit(dotted: str) -> str | None:
        parts = dotted.split(".")
        if parts[0] != root:
            return None
        return parts[1] if len(parts) > 1 else root

    if isinstance(node, ast.Import):
        return [found for alias in node.names if (found := unit(alias.name)) is not None]
    if node.level:  # relative: resolve against the importing module's package
        package = module[:-1]  # a/b.py and a/__init__.py both sit in package a
        base = package[: len(package) - node.level + 1]
        target = ".".join([*base, *(node.module.split(".") if node.module else [])])
    else:
        target = node.module or ""
    if target == root:  # `from expeditor import x`: a submodule is its unit, anything else is the root
        return [alias.name if alias.name in units else root for alias in node.names]
    found = unit(target)
    return [] if found is None else [found]


def import_graph(package_dir: Path, shown_from: Path | None = None) -> Graph:
    """Every unit of the package, with the other units it imports and one file:line per edge.

    Files are named relative to `shown_from`, by default the directory holding the package.
    """
    shown_from = shown_from or package_dir.parent
    root = package_dir.name
    units = units_of(package_dir)
    graph: Graph = {name: {} for name in units}
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir)
        source_unit = root if relative.parts == ("__init__.py",) else relative.parts[0].removesuffix(".py")
        module = [root, *relative.with_suffix("").parts]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
        for node in sorted(imports, key=lambda node: node.lineno):
            for target in _imported_units(node, module, root, units):
                if target != source_unit:
                    graph.setdefault(source_unit, {}).setdefault(
                        target, f"{path.relative_to(shown_from)}:{node.lineno}"
                    )
    return graph


def _strongly_connected(graph: Mapping[str, Mapping[str, str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one unit, each sorted, smallest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def _shortest_cycle_through(graph: Mapping[str, Mapping[str, str]], start: str, within: set[str]) -> list[str]:
    """The shortest path start -> … -> start inside one component (breadth first, so it always exists)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for target in sorted(graph.get(node, {})):
                if target not in within:
                    continue
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"{start} is on no cycle inside {sorted(within)}")


def cycles(graph: Mapping[str, Mapping[str, str]]) -> list[list[str]]:
    """For each component of mutually importing units, the shortest cycle through each of its units, once."""
    found: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for component in _strongly_connected(graph):
        for start in component:
            cycle = _shortest_cycle_through(graph, start, set(component))
            turn = cycle.index(min(cycle[:-1]))
            key = tuple(cycle[turn:-1] + cycle[:turn])
            if key not in seen:
                seen.add(key)
                found.append([*key, key[0]])
    return found


def describe_cycles(graph: Mapping[str, Mapping[str, str]], found: Iterable[list[str]]) -> str:
    lines: list[str] = []
    for cycle in found:
        lines.append(" -> ".join(cycle))
        lines += [f"    {a} -> {b}: {graph[a][b]}" for a, b in itertools.pairwise(cycle)]
    return "\n".join(lines)


def forbidden_edges(graph: Mapping[str, Mapping[str, str]], forbidden: Mapping[str, Iterable[str]]) -> list[str]:
    """Each edge `unit -> target` the rules forbid, with the file:line that makes it."""
    return [
        f"{unit} -> {target}: {graph[unit][target]}"
        for unit, targets in sorted(forbidden.items())
        for target in sorted(targets)
        if target in graph.get(unit, {})
    ]


def _write(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


GRAPH = import_graph(PACKAGE_DIR, REPOSITORY)
UNITS = set(GRAPH)

# DESIGN's layers, highest first: a unit imports nothing from a layer above its own.
LAYERS: tuple[set[str], ...] = (
    {"cli", "server"},
    {"queue"},  # the dispatch workers and the queue launcher run dispatch's attempts
    {"dispatch", "recipes"},
    {"runs"},
    {"reports"},  # the usage reports read the store; the run service records a job's cost with them
    {"executor", "monitor", "state"},
    {"usage"},
    {"config", "config_shared_store", "config_file", "homes", "model_names", "ids", "errors", "times"},
)
ABOVE: dict[str, set[str]] = {unit: set().union(*LAYERS[:rank]) for rank, layer in enumerate(LAYERS) for unit in layer}
# What the layers alone do not forbid: edges within a layer, and for the lowest layer anything but errors.
ALSO_FORBIDDEN: dict[str, set[str]] = {
    "executor": {"monitor"},
    "state": {"monitor"},
    "config": UNITS - {"config", "config_shared_store", "config_file", "homes", "model_names", "errors"},
    "config_shared_store": UNITS - {"config_shared_store"},
    "model_names": UNITS - {"model_names", "errors"},
    "config_file": UNITS - {"config_file", "homes", "errors"},
    "homes": UNITS - {"homes", "errors"},
    "ids": UNITS - {"ids", "errors"},
    "times": UNITS - {"times"},
    "errors": UNITS - {"errors"},
}
FORBIDDEN = {unit: ABOVE.get(unit, set()) | ALSO_FORBIDDEN.get(unit, set()) for unit in ABOVE.keys() | ALSO_FORBIDDEN}


def test_the_graph_sees_every_kind_of_import_in_a_small_package(tmp_path: Path) -> None:
    package = _write(
        tmp_path / "pkg",
        {
            "__init__.py": "__version__ = '1'\n",
            "low.py": "from pkg import __version__\n",
            "mid/__init__.py": "import pkg.low\n",
            "mid/inner.py": "def f():\n    from pkg.top.deep import g\n",
            "top/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import mid\n",
            "top/deep.py": "from ..low import x\nimport os\n",
        },
    )
    graph = import_graph(package)
    assert graph == {
        "pkg": {},
        "low": {"pkg": "pkg/low.py:1"},
        "mid": {"low": "pkg/mid/__init__.py:1", "top": "pkg/mid/inner.py:2"},
        "top": {"mid": "pkg/top/__init__.py:3", "low": "pkg/top/deep.py:1"},
    }


def test_a_cycle_hidden_in_a_function_is_found_and_told_with_the_lines_that_make_it(tmp_path: Path) -> None:
    package = _write(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "a.py": "import pkg.b\n",
            "b.py": "\n\ndef late():\n    from pkg import a\n",
            "c.py": "import pkg.a\n",
        },
    )
    graph = import_graph(package)
    assert cycles(graph) == [["a", "b", "a"]]
    assert describe_cycles(graph, cycles(graph)) == "a -> b -> a\n    a -> b: pkg/a.py:1\n    b -> a: pkg/b.py:4"


def test_an_edge_injected_into_a_graph_without_cycles_makes_one() -> None:
    graph: Graph = {"a": {"b": "a.py:1"}, "b": {"c": "b.py:2"}, "c": {}, "d": {"a": "d.py:3"}}
    assert cycles(graph) == []
    graph["c"]["a"] = "c.py:4"
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert describe_cycles(graph, cycles(graph)).splitlines() == [
        "a -> b -> c -> a",
        "    a -> b: a.py:1",
        "    b -> c: b.py:2",
        "    c -> a: c.py:4",
    ]
    graph["c"]["b"] = "c.py:5"
    assert cycles(graph) == [["a", "b", "c", "a"], ["b", "c", "b"]]


def test_a_forbidden_edge_is_told_with_the_line_that_makes_it(tmp_path: Path) -> None:
    package = _write(tmp_path / "pkg", {"__init__.py": "", "low.py": "import os\nimport pkg.high\n", "high.py": ""})
    graph = import_graph(package)
    assert forbidden_edges(graph, {"low": {"high"}, "high": {"low"}}) == ["low -> high: pkg/low.py:2"]


def test_the_graph_knows_every_unit_the_layers_name() -> None:
    assert set().union(*LAYERS) <= UNITS
    assert {"expeditor", "reports", "testing", "demo", "status"} <= UNITS


def test_no_two_units_import_each_other_even_through_others() -> None:
    found = cycles(GRAPH)
    assert not found, "import cycles between units:\n" + describe_cycles(GRAPH, found)


def test_the_executor_imports_nothing_that_supervises_or_serves_it() -> None:
    violations = forbidden_edges(GRAPH, {"executor": {"monitor", "recipes", "server", "runs"}})
    assert not violations, "executor imports a unit above it:\n" + "\n".join(violations)


def test_recipes_and_dispatch_import_nothing_from_the_server() -> None:
    violations = forbidden_edges(GRAPH, {"recipes": {"server"}, "dispatch": {"server"}})
    assert not violations, "the server is imported from below it:\n" + "\n".join(violations)


@pytest.mark.parametrize("unit", sorted(FORBIDDEN))
def test_a_unit_imports_nothing_from_the_layers_above_it(unit: str) -> None:
    violations = forbidden_edges(GRAPH, {unit: FORBIDDEN[unit]})
    assert not violations, f"{unit} imports against DESIGN's layers:\n" + "\n".join(violations)
