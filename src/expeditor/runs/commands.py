"""``expeditor run-skill``: one supervised run from the command line, and how a result is printed there."""

from __future__ import annotations

import sys
from typing import TextIO

import anyio
from rich.console import Console

from expeditor.config import Settings
from expeditor.executor import RunRequest, RunResult
from expeditor.result_view import result_table
from expeditor.runs.caller import CallerContext
from expeditor.runs.hints import launch_hint
from expeditor.runs.runtime import open_runtime

__all__ = ["print_result", "run_skill_command", "say_launch_hint"]

EXIT_OK = 0
EXIT_RUN_FAILED = 1


def print_result(result: RunResult, out: TextIO, *, as_json: bool) -> None:
    """The whole ``RunResult`` as JSON, or as the table a person reads."""
    if as_json:
        out.write(result.model_dump_json(indent=2) + "\n")
    else:
        Console(file=out).print(result_table(result))


def say_launch_hint(result: RunResult, settings: Settings, err: TextIO | None) -> None:
    """On stderr, what to do when ``result`` could not start because the agent is not installed."""
    hint = launch_hint(result, settings)
    if hint is not None:
        (err or sys.stderr).write(f"expeditor: {hint}\n")


def run_skill_command(
    settings: Settings, request: RunRequest, out: TextIO, *, as_json: bool, err: TextIO | None = None
) -> int:
    """Run ``request`` to its end and print its result; 0 when it succeeded, 1 otherwise."""

    async def run() -> RunResult:
        async with open_runtime(settings, owner_kind="run-skill") as runtime:
            # A person at a terminal is no managed session: nobody's watchers need a marker for them.
            return await runtime.supervisor.run(request, CallerContext(None, None))

    result = anyio.run(run)
    print_result(result, out, as_json=as_json)
    say_launch_hint(result, settings, err)
    return EXIT_OK if result.success else EXIT_RUN_FAILED
