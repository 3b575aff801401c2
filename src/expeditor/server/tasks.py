"""The MCP tasks extension (2026-07-28 draft): run_skill and dispatch for clients that can poll instead of wait.

Interactive Claude Code declares ``io.modelcontextprotocol/tasks`` in each call's client
capabilities. Such a call of run_skill or dispatch is answered at once with a task handle and goes
on in the server's task group (``TaskBoard``); the client polls ``tasks/get`` and may
``tasks/cancel`` it. A call whose client does not declare the extension (every headless session,
every ``claude -p``) is served exactly as before: blocking, with progress. The draft has no
``tasks/list``, so there is none here. The wire shape follows what Claude Code 2.1.332 was seen to
speak: re-check it at every CLI or SDK upgrade.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.shared.exceptions import MCPError
from mcp.types import CLIENT_CAPABILITIES_META_KEY, INVALID_PARAMS, CallToolRequestParams, RequestParams

from expeditor.errors import ExpeditorError
from expeditor.server.state import ServerState
from expeditor.server.task_runs import TaskBoard, TaskRun

__all__ = ["TASKS_EXTENSION", "TASK_TOOLS", "TaskIdParams", "TasksExtension"]

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
# The long calls: every other tool answers at once anyway.
TASK_TOOLS = frozenset({"run_skill", "dispatch"})


class TaskIdParams(RequestParams):
    task_id: str


def declares_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request's client declared the tasks extension (in the call's ``_meta``, else at connect)."""
    meta: Mapping[str, Any] = ctx.meta or {}
    declared = meta.get(CLIENT_CAPABILITIES_META_KEY)
    if isinstance(declared, Mapping):
        extensions = declared.get("extensions")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        if isinstance(extensions, Mapping) and TASKS_EXTENSION in extensions:
            return True
    capabilities = ctx.session.client_capabilities
    return bool(capabilities and capabilities.extensions and TASKS_EXTENSION in capabilities.extensions)


def _board(ctx: ServerRequestContext[Any, Any]) -> tuple[ServerState, TaskBoard]:
    state = ctx.lifespan_context
    assert isinstance(state, ServerState)
    assert state.tasks is not None
    return state, state.tasks


def _label(params: CallToolRequestParams) -> str:
    """What the blocking call prefixes its progress with: a dispatch's job, run_skill nothing."""
    arguments = params.arguments or {}
    if params.name == "dispatch" and "campaign" in arguments and "name" in arguments:
        return f"{arguments['campaign']}/{arguments['name']}"
    return ""


def _known(ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> tuple[ServerState, TaskBoard, TaskRun]:
    state, board = _board(ctx)
    task = board.get(params.task_id)
    if task is None:
        raise MCPError(
            code=INVALID_PARAMS,
            message=(
                f"task {params.task_id} is not one this server holds: a task is kept "
                f"{state.settings.task_retention:.0f} s after it ends and is forgotten when the server restarts. "
                "Its run's outcome is in the campaign store: read a dispatch's with get_dispatch (or "
                "list_dispatches); a run_skill run's is in the store's runs and in the server log"
            ),
            data={"taskId": params.task_id},
        )
    return state, board, task


def _poll_ms(state: ServerState) -> int:
    return round(state.settings.task_poll_interval * 1000)


async def _get(ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
    state, _, task = _known(ctx, params)
    return task.wire(_poll_ms(state))


async def _cancel(ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> HandlerResult:
    state, board, task = _known(ctx, params)
    try:
        caller = state.caller_of(ctx.request)
    except ExpeditorError as exc:
        raise MCPError(code=INVALID_PARAMS, message=str(exc)) from exc
    # The rule of cancel_session: only the run's launchers (or the stdio client, the server token) may stop it.
    launched_by = None if task.session_id is None else state.supervisor.launched_by(task.session_id)
    if launched_by is not None and not caller.may_cancel(launched_by):
        raise MCPError(
            code=INVALID_PARAMS,
            message=f"task {task.task_id} was not started by you ({caller.session_id}) or by a session you launched",
        )
    await board.cancel(task, f"cancelled by tasks/cancel from {caller.session_id or 'an unidentified caller'}")
    return task.wire(_poll_ms(state))


class TasksExtension(Extension):
    """Serves a declared client's run_skill and dispatch calls as tasks; others pass through untouched."""

    identifier = TASKS_EXTENSION

    def methods(self) -> Sequence[MethodBinding]:
        return (
            MethodBinding("tasks/get", TaskIdParams, _get),
            MethodBinding("tasks/cancel", TaskIdParams, _cancel),
        )

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if params.name not in TASK_TOOLS or not declares_tasks(ctx):
            return await call_next(ctx)
        state, board = _board(ctx)

        async def call() -> HandlerResult:
            return await call_next(ctx)

        task = board.start(params.name, _label(params), call)
        return {"resultType": "task", **task.wire(_poll_ms(state))}
