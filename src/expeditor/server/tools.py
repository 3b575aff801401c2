"""The MCP tools: run_skill and the session companions. Their docstrings are what the calling model reads."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field

from expeditor.executor import RunControl, RunRequest, RunResult, Termination
from expeditor.queue.cancel import cancel_dispatch, queue_aborter, queued_dispatch_of, refusal_for
from expeditor.runs import launch_hint
from expeditor.runs.budgets import check_caller_budgets
from expeditor.server.boundary import tool_errors
from expeditor.server.declare import READ_ONLY, tool
from expeditor.server.params import (
    AddDirs,
    Cwd,
    MaxBudgetUsd,
    Model,
    OutputSchema,
    SessionId,
    StaleThreshold,
    Timeout,
)
from expeditor.server.progress import reporting_progress
from expeditor.server.results import lines, run_lines, tool_result
from expeditor.server.state import ServerState
from expeditor.server.task_runs import current_task
from expeditor.status import SessionInfo, live_sessions

__all__ = ["RUN_SKILL_MARKER_LABEL", "CancelOutcome", "SessionList", "register_tools"]

logger = logging.getLogger(__name__)

RUN_SKILL_MARKER_LABEL = "run-skill"


class CancelOutcome(BaseModel):
    cancelled: bool = Field(description="True: the session's process tree is being killed.")
    message: str = Field(description="One sentence saying what happened.")


class SessionList(BaseModel):
    sessions: list[SessionInfo] = Field(description="The live sessions, oldest first.")


def _session_line(info: SessionInfo) -> str:
    quietest = min(info.silent_s.values(), default=0.0)
    waiting = f"; waiting on {info.waiting_on}" if info.waiting_on else ""
    caller = f", called by {info.caller_session_id}" if info.caller_session_id else ""
    caller += f" as task {info.task_id}" if info.task_id else ""
    return (
        f"{info.session_id} ({info.kind}, pid {info.pid}{caller}): running {info.elapsed_s:.0f} s, last activity "
        f"{quietest:.0f} s ago{waiting}; {info.alive_because}"
    )


def register_tools(server: MCPServer[Any]) -> None:
    """Add the tools to ``server``; each reads the server state from its lifespan."""

    @tool(
        server,
        title="Run a skill in a supervised headless session",
        annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=False, open_world_hint=True),
    )
    async def run_skill(
        skill_command: Annotated[
            str,
            Field(
                min_length=1,
                description='The skill command or prompt the session runs, e.g. "/make-plan 42".',
            ),
        ],
        cwd: Cwd,
        ctx: Context,
        model: Model = None,
        stale_threshold: StaleThreshold = None,
        timeout: Timeout = None,  # noqa: ASYNC109  (the session's wall-clock limit, not ours)
        add_dirs: AddDirs = None,
        resume_session_id: SessionId = None,
        output_schema: OutputSchema = None,
        max_budget_usd: MaxBudgetUsd = None,
    ) -> Annotated[CallToolResult, RunResult]:
        """Run one headless Claude Code session for a skill command (e.g. "/make-plan 42") in `cwd` and wait for it.

        The session is supervised: it is killed with its whole process tree if its transcript,
        stdout and child processes all stay silent longer than `stale_threshold` seconds (default
        1200), or when it runs past `timeout` seconds (default 7200). The text says whether it
        succeeded, how it ended and why, its token usage and its final text; the structured result
        adds the evidence (`decided_by`, `last_moved`, `killed`). Pass its `session_id` as
        `resume_session_id` to continue that session. With `output_schema` the session answers
        with a matching JSON object, returned as `structured_output`; with `max_budget_usd` Claude Code
        stops it at that cost. A dispatched orchestrator's call is refused once its campaign's or job's
        budget is spent. You are not judged stuck while you wait.
        """
        state = ServerState.of(ctx)
        with tool_errors("run_skill"):
            caller = state.caller(ctx)
            caller.require("run_skill")
            request = RunRequest(
                prompt=skill_command,
                cwd=Path(cwd),
                model=model,
                stale_threshold=stale_threshold,
                timeout=timeout,
                add_dirs=tuple(Path(d) for d in add_dirs or ()),
                resume_session_id=resume_session_id,
                output_schema=output_schema,
                max_budget_usd=max_budget_usd,
            )
            # A dispatched orchestrator's next step: refused once its campaign or job has spent its budget.
            check = functools.partial(check_caller_budgets, state.settings, state.store, caller.session_id)
            await anyio.to_thread.run_sync(check)
            task = current_task()
            control = RunControl() if task is None else task.control

            async def report(elapsed: float, message: str) -> None:
                await ctx.report_progress(elapsed, None, message)

            async with reporting_progress(report, state.settings.progress_interval, control, enabled=task is None):
                result = await state.supervisor.run(request, caller, marker=RUN_SKILL_MARKER_LABEL, control=control)
        hint = launch_hint(result, state.settings)
        text = "\n".join([*run_lines(result), *([hint] if hint else [])])
        return tool_result(text, result, is_error=result.termination is Termination.LAUNCH_FAILED)

    @tool(
        server,
        title="List running sessions",
        annotations=READ_ONLY,
    )
    async def list_sessions(ctx: Context) -> Annotated[CallToolResult, SessionList]:
        """List the headless sessions expeditor is supervising right now (all servers sharing this home).

        One line per session: its id, kind, pid, caller, how long it has run, how long since its
        transcript, stdout or child processes last moved, what it waits on and why it is considered
        alive (or that it was orphaned by a dead server). The structured result has every field.
        """
        state = ServerState.of(ctx)
        with tool_errors("list_sessions"):
            sessions = live_sessions(state.settings, state.supervisor.executor.registry)
        text = lines((_session_line(info) for info in sessions), empty="no sessions running")
        return tool_result(text, SessionList(sessions=sessions))

    @tool(
        server,
        title="Cancel a running session",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
    async def cancel_session(
        session_id: Annotated[
            str, Field(min_length=1, description="The session to stop, as list_sessions or run_skill showed it.")
        ],
        ctx: Context,
    ) -> Annotated[CallToolResult, CancelOutcome]:
        """Stop a session this server launched, or a dispatched job's session on any host: its whole process
        tree is killed and the run ends as cancelled.

        The call that launched it (run_skill or dispatch) then returns with termination "cancelled".
        A launched session may stop only the sessions it launched, directly or through its children.
        With workers on several hosts (queue mode), a dispatched job's session is stopped wherever it runs.
        """
        state = ServerState.of(ctx)
        with tool_errors("cancel_session"):
            caller = state.caller(ctx)
            launched_by = state.supervisor.launched_by(session_id)
            if launched_by is not None and not caller.may_cancel(launched_by):
                raise ToolError(
                    f"session {session_id} was not launched by you ({caller.session_id}) or by a session you "
                    "launched: only its launchers or the holder of the server's token may cancel it"
                )
            reason = f"cancelled by cancel_session from {caller.session_id or 'an unidentified caller'}"
            if state.supervisor.cancel(session_id, reason):
                message = f"session {session_id} is being stopped"
                return tool_result(message, CancelOutcome(cancelled=True, message=message))
            shared = state.settings.store_url is not None
            queued = await queued_dispatch_of(state.store, session_id) if shared else None
            if queued is not None:
                caller_of_job = (queued.caller_session_id,) if queued.caller_session_id else ()
                if not caller.may_cancel(caller_of_job):
                    raise ToolError(
                        f"session {session_id} runs a job dispatched by {queued.caller_session_id or 'another caller'}"
                        ": only its dispatcher or the holder of the server's token may cancel it"
                    )
                settings = state.settings
                async with queue_aborter(settings) as abort_job:
                    done = await cancel_dispatch(
                        state.store,
                        abort_job,
                        queued.campaign_id,
                        queued.name,
                        reason=reason,
                        wait=settings.kill_grace + settings.store_timeout,
                    )
                return tool_result(done.message, CancelOutcome(cancelled=done.cancelled, message=done.message))
            owners = [e for e in state.supervisor.executor.registry.entries() if e.session_id == session_id]
            if owners:
                raise ToolError(
                    f"session {session_id} belongs to another expeditor server (pid {owners[0].owner_pid}); "
                    "cancel it through that server"
                )
            refusal = await refusal_for(state.store, session_id) if shared else None
            if refusal is not None:
                raise ToolError(refusal)
            raise ToolError(f"no live session {session_id}: list_sessions shows the sessions that can be cancelled")
