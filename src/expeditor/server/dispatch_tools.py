"""The dispatch tools: run a campaign's named job once, and read the campaign's records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from expeditor.dispatch import DispatchOutcome
from expeditor.executor import RunControl
from expeditor.server.boundary import tool_errors
from expeditor.server.progress import reporting_progress
from expeditor.server.state import ServerState
from expeditor.state import DispatchRecord, DispatchStatus

__all__ = ["register_dispatch_tools"]


def register_dispatch_tools(server: MCPServer[Any]) -> None:
    @server.tool()
    async def dispatch(
        campaign: str,
        name: str,
        recipe: str,
        inputs: dict[str, str],
        ctx: Context,
        force: bool = False,
        cwd: str | None = None,
        stale_threshold: float | None = None,
    ) -> DispatchOutcome:
        """Run one named job of a campaign: a sub-orchestrator session that follows `recipe` with `inputs`.

        A job that already succeeded in this campaign is NOT run again: the recorded result comes
        back at once with `short_circuited: true` (and `inputs_changed: true` if you passed other
        inputs); pass `force: true` only to deliberately rerun finished work. If another call is
        running the same job, you get `already_running: true` and its session id. A job whose
        previous run was interrupted is resumed. `recipe` is a recipe name (list_recipes shows
        them); `cwd` is the project directory the job works in. You are not judged stuck while
        you wait for this call.
        """
        state = ServerState.of(ctx)
        with tool_errors("dispatch"):
            caller = state.caller(ctx)
            caller.require("dispatch")
            # This call's own run: its progress is what this call reports, whoever else dispatches meanwhile.
            control = RunControl()

            async def report(elapsed: float, message: str) -> None:
                await ctx.report_progress(elapsed, None, f"{campaign}/{name}: {message}")

            async with reporting_progress(report, state.settings.progress_interval, control):
                return await state.dispatcher.dispatch(
                    campaign,
                    name,
                    recipe,
                    inputs,
                    caller=caller,
                    force=force,
                    cwd=Path(cwd) if cwd else None,
                    stale_threshold=stale_threshold,
                    control=control,
                )

    @server.tool()
    async def get_dispatch(campaign: str, name: str, ctx: Context) -> DispatchRecord:
        """The record of one job of a campaign: its status, attempts, session id, result summary and usage."""
        state = ServerState.of(ctx)
        with tool_errors("get_dispatch"):
            record = await anyio.to_thread.run_sync(state.store.get, campaign, name)
        if record is None:
            raise ToolError(f"no job {name!r} in campaign {campaign!r}: list_dispatches shows the recorded jobs")
        return record

    @server.tool()
    async def list_dispatches(
        campaign: str, ctx: Context, status: DispatchStatus | None = None
    ) -> list[DispatchRecord]:
        """Every job recorded in a campaign, optionally only those in one status (pending, running, success,
        failure, interrupted, cancelled)."""
        state = ServerState.of(ctx)
        with tool_errors("list_dispatches"):
            return await anyio.to_thread.run_sync(lambda: state.store.list(campaign, status=status))
