"""The dispatch tools: run a campaign's named job once, and read the campaign's records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field

from expeditor.dispatch import DispatchOutcome
from expeditor.executor import RunControl, Termination
from expeditor.runs import launch_hint
from expeditor.runs.worktrees import Isolation
from expeditor.server.boundary import tool_errors
from expeditor.server.declare import READ_ONLY, tool
from expeditor.server.params import Campaign, JobName, StaleThreshold
from expeditor.server.progress import reporting_progress
from expeditor.server.results import lines, run_lines, tool_result, usage_line
from expeditor.server.state import ServerState
from expeditor.server.task_runs import current_task
from expeditor.state import DispatchRecord, DispatchStatus
from expeditor.times import iso_utc

__all__ = ["DispatchList", "register_dispatch_tools"]


class DispatchList(BaseModel):
    jobs: list[DispatchRecord] = Field(description="The campaign's recorded jobs, in the order they were created.")


def _outcome_text(outcome: DispatchOutcome, hint: str | None) -> str:
    run = outcome.result
    run_text = run_lines(run, with_usage=False) if run is not None else []
    verdict, final_text = run_text[:2], run_text[2:]
    session = f", session {outcome.dispatched_session_id}" if outcome.dispatched_session_id else ""
    found = [
        outcome.message,
        f"job {outcome.campaign_id}/{outcome.name}: {outcome.status.value}, attempt {outcome.attempts}{session}",
        *verdict,
    ]
    # One usage line: the job's (its orchestrator and every session it ran), else the run's own.
    usage = outcome.usage or (run.usage if run is not None else None)
    if usage is not None:
        found.append(usage_line(usage))
    if outcome.record_error:
        found.append(f"not recorded: {outcome.record_error}")
    if hint:
        found.append(hint)
    if run is not None:
        found += final_text
    elif outcome.summary:
        found += ["", outcome.summary]
    return "\n".join(found)


def _record_lines(record: DispatchRecord) -> list[str]:
    session = f", session {record.dispatched_session_id}" if record.dispatched_session_id else ""
    found = [
        f"job {record.campaign_id}/{record.name}: {record.status.value}, attempt {record.attempts}, recipe "
        f"{record.recipe}{session}",
        f"dispatched {iso_utc(record.created_at)}, updated {iso_utc(record.updated_at)}",
    ]
    if record.inputs:
        found.append("inputs: " + ", ".join(f"{key}={value!r}" for key, value in record.inputs.items()))
    if record.usage is not None:
        found.append(usage_line(record.usage))
    if record.branch:
        found.append(f"branch {record.branch}, worktree {record.worktree}")
    if record.error:
        found.append(f"error: {record.error}")
    if record.result_summary:
        found += ["", record.result_summary]
    return found


def _record_line(record: DispatchRecord) -> str:
    session = f", session {record.dispatched_session_id}" if record.dispatched_session_id else ""
    return (
        f"{record.name}: {record.status.value} (attempt {record.attempts}, recipe {record.recipe}{session}, "
        f"updated {iso_utc(record.updated_at)})"
    )


def register_dispatch_tools(server: MCPServer[Any]) -> None:
    @tool(
        server,
        title="Dispatch a campaign's job once",
        # Idempotent: a job that succeeded returns its record instead of running again.
        annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=True, open_world_hint=True),
    )
    async def dispatch(
        campaign: Campaign,
        name: JobName,
        recipe: Annotated[
            str, Field(min_length=1, description="The recipe the job follows, as list_recipes names it.")
        ],
        inputs: Annotated[
            dict[str, str],
            Field(description="The recipe's inputs by name, as strings (list_recipes shows which it takes)."),
        ],
        ctx: Context,
        force: Annotated[
            bool, Field(description="Run the job again even though it already succeeded (deliberate rerun).")
        ] = False,
        cwd: Annotated[
            str | None,
            Field(
                min_length=1,
                description="Absolute path of the project directory the job works in, under the server's allowed "
                "roots. Default: the server's working directory.",
            ),
        ] = None,
        stale_threshold: StaleThreshold = None,
        isolation: Annotated[
            Isolation | None,
            Field(
                description="worktree: the job runs in a git worktree of its own, on branch "
                "expeditor/<campaign>/<job>, made from the project's HEAD; none: in cwd itself. Default: the recipe's."
            ),
        ] = None,
    ) -> Annotated[CallToolResult, DispatchOutcome]:
        """Run one named job of a campaign: a sub-orchestrator session that follows `recipe` with `inputs`.

        A job that already succeeded in this campaign is NOT run again: the recorded result comes
        back at once with `short_circuited: true` (and `inputs_changed: true` if you passed other
        inputs); pass `force: true` only to deliberately rerun finished work. If another call is
        running the same job, you get `already_running: true` and its session id. A job whose
        previous run was interrupted is resumed. You are not judged stuck while you wait.
        """
        state = ServerState.of(ctx)
        with tool_errors("dispatch"):
            caller = state.caller(ctx)
            caller.require("dispatch")
            # This call's own run: its progress is what this call reports, whoever else dispatches meanwhile.
            task = current_task()  # served as an MCP task: polled for its status, no progress to send
            control = RunControl() if task is None else task.control

            async def report(elapsed: float, message: str) -> None:
                await ctx.report_progress(elapsed, None, f"{campaign}/{name}: {message}")

            async with reporting_progress(report, state.settings.progress_interval, control, enabled=task is None):
                outcome = await state.dispatcher.dispatch(
                    campaign,
                    name,
                    recipe,
                    inputs,
                    caller=caller,
                    force=force,
                    cwd=Path(cwd) if cwd else None,
                    stale_threshold=stale_threshold,
                    control=control,
                    isolation=isolation,
                )
        run = outcome.result
        if run is not None and outcome.usage == run.usage:
            outcome = outcome.model_copy(update={"usage": None})  # said once, in the run this call launched
        hint = None if run is None else launch_hint(run, state.settings)
        failed_to_start = run is not None and run.termination is Termination.LAUNCH_FAILED
        return tool_result(_outcome_text(outcome, hint), outcome, is_error=failed_to_start)

    @tool(server, title="Get one job's record", annotations=READ_ONLY)
    async def get_dispatch(
        campaign: Campaign, name: JobName, ctx: Context
    ) -> Annotated[CallToolResult, DispatchRecord]:
        """The record of one job of a campaign: its status, attempts, session id, result summary and usage."""
        state = ServerState.of(ctx)
        with tool_errors("get_dispatch"):
            record = await anyio.to_thread.run_sync(state.store.get, campaign, name)
        if record is None:
            raise ToolError(f"no job {name!r} in campaign {campaign!r}: list_dispatches shows the recorded jobs")
        return tool_result("\n".join(_record_lines(record)), record)

    @tool(server, title="List a campaign's jobs", annotations=READ_ONLY)
    async def list_dispatches(
        campaign: Campaign,
        ctx: Context,
        status: Annotated[
            DispatchStatus | None, Field(description="Only the jobs in this status. Default: every job.")
        ] = None,
    ) -> Annotated[CallToolResult, DispatchList]:
        """Every job recorded in a campaign, one line each, optionally only those in one status."""
        state = ServerState.of(ctx)
        with tool_errors("list_dispatches"):
            jobs = await anyio.to_thread.run_sync(lambda: state.store.list(campaign, status=status))
        which = f" {status.value}" if status is not None else ""
        text = lines((_record_line(job) for job in jobs), empty=f"no{which} jobs recorded in campaign {campaign!r}")
        return tool_result(text, DispatchList(jobs=jobs))
