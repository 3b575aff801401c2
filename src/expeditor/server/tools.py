"""The MCP tools: run_skill and the session companions. Their docstrings are what the calling model reads."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

from expeditor.executor import RunControl, RunRequest, RunResult
from expeditor.server.boundary import tool_errors
from expeditor.server.progress import reporting_progress
from expeditor.server.state import ServerState
from expeditor.status import SessionInfo, live_sessions

__all__ = ["RUN_SKILL_MARKER_LABEL", "CancelOutcome", "register_tools"]

logger = logging.getLogger(__name__)

RUN_SKILL_MARKER_LABEL = "run-skill"


class CancelOutcome(BaseModel):
    cancelled: bool
    message: str


def register_tools(server: MCPServer[Any]) -> None:
    """Add the tools to ``server``; each reads the server state from its lifespan."""

    @server.tool()
    async def run_skill(
        skill_command: str,
        cwd: str,
        ctx: Context,
        model: str | None = None,
        stale_threshold: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  (the session's wall-clock limit, not ours)
        add_dirs: list[str] | None = None,
        resume_session_id: str | None = None,
    ) -> RunResult:
        """Run one headless Claude Code session for a skill command (e.g. "/make-plan 42") in `cwd` and wait for it.

        The session is supervised: it is killed with its whole process tree if its transcript,
        stdout and child processes all stay silent longer than `stale_threshold` seconds (default
        1200), or when it runs past `timeout` seconds (default 7200). The result says whether it
        succeeded, its final text, how it ended (`termination`, `reason`), its session id (pass it
        as `resume_session_id` to continue that session) and its token usage. `model` is sonnet,
        opus, haiku or a full model id. You are not judged stuck while you wait for this call.
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
            )
            control = RunControl()

            async def report(elapsed: float, message: str) -> None:
                await ctx.report_progress(elapsed, None, message)

            async with reporting_progress(report, state.settings.progress_interval, control):
                return await state.supervisor.run(request, caller, marker=RUN_SKILL_MARKER_LABEL, control=control)

    @server.tool()
    async def list_sessions(ctx: Context) -> list[SessionInfo]:
        """List the headless sessions expeditor is supervising right now (all servers sharing this home).

        For each: its id, kind, pid, who is waiting on it, how long it has run, how many seconds
        since its transcript, stdout and child processes last showed activity, the execution
        marker (if any) that vouches for it while it is blocked on a tool call, what it is waiting
        on, and why it is considered alive (or that it was orphaned by a dead server).
        """
        state = ServerState.of(ctx)
        with tool_errors("list_sessions"):
            return live_sessions(state.settings, state.supervisor.executor.registry)

    @server.tool()
    async def cancel_session(session_id: str, ctx: Context) -> CancelOutcome:
        """Stop a session this server launched: its whole process tree is killed and the run ends as cancelled.

        The call that launched it (run_skill or dispatch) then returns with termination "cancelled".
        A launched session may stop only the sessions it launched, directly or through its children.
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
                return CancelOutcome(cancelled=True, message=f"session {session_id} is being stopped")
            owners = [e for e in state.supervisor.executor.registry.entries() if e.session_id == session_id]
            if owners:
                raise ToolError(
                    f"session {session_id} belongs to another expeditor server (pid {owners[0].owner_pid}); "
                    "cancel it through that server"
                )
            raise ToolError(f"no live session {session_id}: list_sessions shows the sessions that can be cancelled")
