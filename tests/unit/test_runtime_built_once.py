"""The server, the CLI, the pipeline runner and the demo build their runtime one way: through `open_runtime`.

None of them constructs a store, an executor, a supervisor or a job lifecycle of its own, so a session
launched from any of them is seen by the same registry, the same watchers and the same shutdown. The
files are read with `ast`, not imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
ENTRY_POINTS = [
    "src/expeditor/server/app.py",
    "src/expeditor/runs/commands.py",
    "src/expeditor/dispatch/command.py",
    "src/expeditor/recipes/run.py",
    "src/expeditor/demo.py",
]
BUILDERS = {"SqliteCampaignStore", "open_store", "ClaudeCodeExecutor", "build_executor", "Supervisor", "JobLifecycle"}


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def calls_to(source: str, names: set[str], filename: str = "<source>") -> list[str]:
    """`file:line name` for every call of one of `names`, by name, as an attribute, or under an import alias."""
    tree = ast.parse(source, filename=filename)
    wanted = {name: name for name in names}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            wanted |= {alias.asname: alias.name for alias in node.names if alias.name in names and alias.asname}
    found = [
        (node.lineno, wanted[called])
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and (called := _called_name(node)) in wanted
    ]
    return [f"{filename}:{line} {name}" for line, name in sorted(found)]


def test_a_builder_is_found_by_name_as_an_attribute_and_under_an_alias_but_not_as_a_type() -> None:
    source = "\n".join(
        [
            "from expeditor.runs import Supervisor as Boss, open_runtime",
            "import expeditor.state as state",
            "def f(supervisor: Supervisor) -> None:",
            "    Boss(1)",
            "    state.open_store(path)",
            "    executor = ClaudeCodeExecutor()",
            "    open_runtime(settings)",
            "    SupervisorView(supervisor)",
        ]
    )
    assert calls_to(source, BUILDERS, "f.py") == [
        "f.py:4 Supervisor",
        "f.py:5 open_store",
        "f.py:6 ClaudeCodeExecutor",
    ]
    assert calls_to(source, {"open_runtime"}, "f.py") == ["f.py:7 open_runtime"]


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_an_entry_point_builds_no_store_executor_or_supervisor_of_its_own(path: str) -> None:
    offending = calls_to((REPOSITORY / path).read_text(encoding="utf-8"), BUILDERS, path)
    assert not offending, "built outside open_runtime:\n" + "\n".join(offending)


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_an_entry_point_builds_its_runtime_with_open_runtime(path: str) -> None:
    assert calls_to((REPOSITORY / path).read_text(encoding="utf-8"), {"open_runtime"}, path), (
        f"{path} never calls open_runtime"
    )
