"""``expeditor dispatch``: one dispatch from the command line, its outcome printed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

import anyio

from expeditor.config import Settings
from expeditor.dispatch.outcome import DispatchOutcome
from expeditor.dispatch.service import DispatchService, Launcher
from expeditor.runs import CallerContext, Runtime, open_runtime
from expeditor.runs.commands import print_result, say_launch_hint
from expeditor.runs.worktrees import Isolation
from expeditor.state import DispatchStatus

__all__ = ["LauncherFactory", "dispatch_command"]

LauncherFactory = Callable[[Runtime], contextlib.AbstractAsyncContextManager[Launcher]]


def dispatch_command(
    settings: Settings,
    campaign: str,
    name: str,
    recipe: str,
    inputs: Mapping[str, str],
    *,
    caller: CallerContext,
    force: bool,
    cwd: Path | None,
    stale_threshold: float | None,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    launcher: LauncherFactory | None = None,
    isolation: Isolation | None = None,
) -> int:
    """``expeditor dispatch``: run the job and print its outcome; 0 when it succeeded or already runs, else 1.

    ``launcher`` opens the launcher for this process's runtime (the queue's, in queue mode); default: local.
    """

    async def run() -> DispatchOutcome:
        async with open_runtime(settings, owner_kind="dispatch") as runtime, contextlib.AsyncExitStack() as stack:
            chosen = None if launcher is None else await stack.enter_async_context(launcher(runtime))
            return await DispatchService(runtime, launcher=chosen).dispatch(
                campaign,
                name,
                recipe,
                inputs,
                caller=caller,
                force=force,
                cwd=cwd,
                stale_threshold=stale_threshold,
                isolation=isolation,
            )

    outcome = anyio.run(run)
    if as_json:
        out.write(outcome.model_dump_json(indent=2) + "\n")
    else:
        # An attempt that ended before its session started (refused on the worker, cancelled while waiting) has none.
        session = outcome.dispatched_session_id
        out.write(
            f"{outcome.campaign_id}/{outcome.name}: {outcome.status.value} (attempt {outcome.attempts}, "
            f"dispatch {outcome.dispatch_id}{f', session {session}' if session else ''}"
            f"{f', host {outcome.host}' if outcome.host else ''})\n{outcome.message}\n"
        )
    if outcome.result is not None:
        say_launch_hint(outcome.result, settings, err)
    if outcome.record_error is not None:
        # The run finished; only its record is missing. Its result is all there is of it: show it whole.
        if outcome.result is not None and not as_json:
            print_result(outcome.result, out, as_json=False)
        err.write(f"expeditor: {outcome.record_error}\n")
        return 1
    return 0 if outcome.status is DispatchStatus.SUCCESS or outcome.already_running else 1
