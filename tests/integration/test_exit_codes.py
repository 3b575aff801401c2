"""Every command's exit status, through the installed console script: 0 done, 1 failed or not found, 2 bad usage.

The README's "Exit status" table is this file's contract. Each command has a case that succeeds and one
that does not; a command added to the parser without both fails the completeness test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import expeditor
from expeditor.cli import _parser  # pyright: ignore[reportPrivateUsage]

BIN = Path(sys.executable).parent
EXPEDITOR = BIN / "expeditor"
FAKE_AGENT = BIN / "expeditor-fake-agent"

ANSWERS: dict[str, object] = {"steps": [{"assistant": "done"}, {"result": {}}]}
CRASHES: dict[str, object] = {"steps": [{"exit": 4}]}

PIPELINE = "name: {name}\ndescription: {what}\norchestrator: pipeline\nsteps:\n  only: {{run: [{command}]}}\n"
RECIPES = {
    "passes": PIPELINE.format(name="passes", what="One command that succeeds.", command="'true'"),
    "fails": PIPELINE.format(name="fails", what="One command that fails.", command="'false'"),
    "broken": "name: broken\ndescription: A typo.\nsteps:\n  only: {skil: /x}\n",
}


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    code: int
    says: str = ""  # a part of stdout + stderr that shows why
    scenario: dict[str, object] | None = None  # what the fake agent does, for the cases that launch it


CASES: dict[str, Case] = {
    "version": Case(("--version",), 0, f"expeditor {expeditor.__version__}"),
    "no command": Case((), 2, "required"),
    "unknown command": Case(("launch",), 2, "invalid choice"),
    "run-skill ok": Case(("run-skill", "/x", "--cwd", "{project}"), 0, "success", ANSWERS),
    "run-skill fails": Case(("run-skill", "/x", "--cwd", "{project}"), 1, "crashed", CRASHES),
    "run-skill bad model": Case(("run-skill", "/x", "--cwd", "{project}", "--model", "gpt-5"), 2, "sonnet, opus"),
    "serve ok": Case(("serve",), 0),  # stdio, its input closed at once: a normal stop
    "serve refused": Case(("serve", "--transport", "http", "--host", "0.0.0.0"), 2, "token"),
    "serve port out of range": Case(("serve", "--transport", "http", "--port", "99999"), 2, "from 1 to 65535"),
    "dispatch ok": Case(("dispatch", "c", "ok", "--recipe", "diagnose", "--input", "problem=p"), 0, "success", ANSWERS),
    "dispatch fails": Case(
        ("dispatch", "c", "bad", "--recipe", "diagnose", "--input", "problem=p"), 1, "failure", CRASHES
    ),
    "dispatch unknown recipe": Case(("dispatch", "c", "u", "--recipe", "nope"), 1, "no recipe named 'nope'"),
    "dispatch broken recipe": Case(("dispatch", "c", "b", "--recipe", "broken"), 1, "did you mean 'skill'"),
    "dispatch input not key=value": Case(
        ("dispatch", "c", "k", "--recipe", "diagnose", "--input", "oops"), 2, "key=value"
    ),
    "dispatch input missing": Case(("dispatch", "c", "m", "--recipe", "diagnose"), 2, "problem"),
    "dispatch isolated outside a repository": Case(
        ("dispatch", "c", "i", "--recipe", "diagnose", "--input", "problem=p", "--isolation", "worktree"),
        2,
        "needs a git repository",
    ),
    "worktrees ok": Case(("worktrees",), 0, "no job worktrees"),
    "worktrees prune ok": Case(("worktrees", "prune"), 0, "0 worktree(s) removed"),
    "worktrees unknown action": Case(("worktrees", "purge"), 2, "invalid choice"),
    "campaign budget ok": Case(("campaign", "budget", "c", "5"), 0, "budget $5"),
    "campaign budget not an amount": Case(("campaign", "budget", "c", "lots"), 2, "not an amount in USD"),
    "campaign budget clear with amount": Case(("campaign", "budget", "c", "5", "--clear"), 2, "--clear removes"),
    "status ok": Case(("status",), 0),
    "status unknown campaign": Case(("status", "--campaign", "nope"), 1, "nope"),
    "status bad interval": Case(("status", "--interval", "0"), 2, "positive"),
    "marker hold ok": Case(("marker", "hold", "--session", "abc", "--", "true"), 0),
    "marker hold passes the command's status": Case(("marker", "hold", "--session", "abc", "--", "false"), 1),
    "marker hold no command": Case(("marker", "hold", "--session", "abc"), 2, "needs a command"),
    "db migrate ok": Case(("db", "migrate"), 0, "nothing to do"),  # the SQLite store migrates itself
    "worker on SQLite": Case(("worker",), 2, "needs a shared PostgreSQL store"),
    "worker no slots": Case(("worker", "--slots", "0"), 2, "from 1 to 1024"),
    "cancel on SQLite": Case(("cancel", "c", "first"), 1, "shared PostgreSQL store"),
    "cancel names nothing": Case(("cancel",), 2, "expected CAMPAIGN NAME"),
    "db migrate extra argument": Case(("db", "migrate", "extra"), 2, "unrecognized arguments"),
    "demo ok": Case(("demo",), 0),
    "demo bad markdown path": Case(("demo", "--markdown", "/nonexistent/report.md"), 2, "does not exist"),
    "report ok": Case(("report", "c", "--format", "md"), 0, "## Token Usage Summary"),
    "report nothing recorded": Case(("report", "nope"), 1, "no agent sessions recorded"),
    "report bad format": Case(("report", "c", "--format", "xml"), 2, "invalid choice"),
    "recipe run ok": Case(("recipe", "run", "passes", "--cwd", "{project}"), 0),
    "recipe run fails": Case(("recipe", "run", "fails", "--cwd", "{project}"), 1),
    "recipe run unknown": Case(("recipe", "run", "nope"), 1, "no recipe named 'nope'"),
    "recipe run unknown input": Case(("recipe", "run", "passes", "--input", "x=1"), 2, "its inputs are"),
    "recipe list ok": Case(("recipe", "list", "--json"), 0, '"name": "passes"'),
    "recipe list extra argument": Case(("recipe", "list", "extra"), 2, "unrecognized arguments"),
    "recipe show ok": Case(("recipe", "show", "diagnose", "--json"), 0, '"effective"'),
    "recipe show unknown": Case(("recipe", "show", "diagnos"), 1, "did you mean 'diagnose'"),
    "recipe show broken": Case(("recipe", "show", "broken"), 1, "1 problem"),
    "recipe validate ok": Case(("recipe", "validate", "{home}/recipes/passes.yaml"), 0, "valid"),
    "recipe validate problems": Case(("recipe", "validate", "{home}/recipes/broken.yaml"), 1, "did you mean 'skill'"),
    "recipe validate missing file": Case(("recipe", "validate", "{project}/absent.yaml"), 1, "cannot be read"),
    "recipe validate no files": Case(("recipe", "validate", "{project}"), 2, "no recipe files in"),
}


def _leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    subcommands = [
        action
        for action in parser._actions  # pyright: ignore[reportPrivateUsage]
        if isinstance(action, argparse._SubParsersAction)  # pyright: ignore[reportPrivateUsage]
    ]
    if not subcommands:
        yield prefix
    for action in subcommands:
        for name, sub in action.choices.items():  # pyright: ignore[reportUnknownVariableType]
            yield from _leaf_commands(sub, (*prefix, name))  # pyright: ignore[reportUnknownArgumentType]


def _command_of(case: Case) -> tuple[str, ...]:
    words = [word for word in case.args if not word.startswith("-")]
    for leaf in _leaf_commands(_parser()):
        if tuple(words[: len(leaf)]) == leaf:
            return leaf
    return ()


# Commands whose success needs PostgreSQL and a worker: their exit 0 is asserted by these tests instead.
SUCCEEDS_ELSEWHERE: dict[tuple[str, ...], tuple[str, str]] = {
    ("worker",): ("test_queue_worker.py", "def test_sigterm_kills_the_sessions_at_once_and_queues_the_dispatch_again"),
    ("cancel",): ("test_queue_cancel.py", "def test_expeditor_cancel_from_another_process_kills_a_running_job"),
}


def test_every_command_has_a_case_that_succeeds_and_one_that_does_not() -> None:
    codes: dict[tuple[str, ...], set[int]] = {}
    for case in CASES.values():
        codes.setdefault(_command_of(case), set()).add(case.code)
    for command, (test_file, test) in SUCCEEDS_ELSEWHERE.items():
        assert test in (Path(__file__).parent / test_file).read_text(), f"{test_file} no longer has {test}"
        codes.setdefault(command, set()).add(0)
    missing = [
        " ".join(leaf)
        for leaf in _leaf_commands(_parser())
        if 0 not in codes.get(leaf, set()) or not codes.get(leaf, set()) - {0}
    ]
    assert missing == []


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with three project recipes, a project directory, and campaign ``c`` with one recorded job."""
    root = tmp_path_factory.mktemp("exit-codes")
    (root / "project").mkdir()
    recipes = root / "home" / "recipes"
    recipes.mkdir(parents=True)
    for name, text in RECIPES.items():
        (recipes / f"{name}.yaml").write_text(text, encoding="utf-8")
    first = Case(("dispatch", "c", "first", "--recipe", "diagnose", "--input", "problem=p"), 0, scenario=ANSWERS)
    recorded = _expeditor(root, first)
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    return root


def _expeditor(root: Path, case: Case) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EXPEDITOR_")}
    env |= {
        "EXPEDITOR_HOME": str(root / "home"),
        "EXPEDITOR_CLAUDE_COMMAND": str(FAKE_AGENT),
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(root / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(root / "project"),
        "EXPEDITOR_KILL_GRACE": "0.5",
    }
    if case.scenario is not None:
        env["EXPEDITOR_FAKE_SCENARIO"] = json.dumps(case.scenario)
    args = [arg.format(home=root / "home", project=root / "project") for arg in case.args]
    return subprocess.run(
        [str(EXPEDITOR), *args],
        env=env,
        cwd=root / "project",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.parametrize("name", list(CASES))
def test_the_console_script_exits_as_the_readme_says(workspace: Path, name: str) -> None:
    case = CASES[name]
    done = _expeditor(workspace, case)
    output = done.stdout + done.stderr
    assert done.returncode == case.code, output
    assert case.says in output, output
    if case.code == 2:
        assert done.stdout == "", "bad usage prints nothing but the error, on stderr"
        assert done.stderr.strip(), "bad usage says what was wrong"
