"""A client side of the MCP tasks extension, as interactive Claude Code speaks it: declare, then poll or cancel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import anyio
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.shared.dispatcher import ProgressFnT
from mcp.types import CallToolResult, Request, RequestParams, Result

TASKS = "io.modelcontextprotocol/tasks"


class TaskHandle(Result):
    """A tools/call answered as a task."""

    result_type: Literal["task"] = "task"
    task_id: str
    status: str
    status_message: str | None = None
    poll_interval_ms: int
    created_at: str
    last_updated_at: str


class TaskIdParams(RequestParams):
    task_id: str


class TaskState(Result):
    """A tasks/get or tasks/cancel answer."""

    task_id: str
    status: str
    status_message: str | None = None
    poll_interval_ms: int
    created_at: str
    last_updated_at: str
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


async def task_request(client: Client, method: str, task_id: str) -> TaskState:
    request: Request[TaskIdParams, str] = Request(method=method, params=TaskIdParams(task_id=task_id))
    return await client.session.send_request(request, TaskState)


async def poll_until_done(client: Client, task_id: str, *, within: float = 30) -> TaskState:
    with anyio.fail_after(within):
        while True:
            state = await task_request(client, "tasks/get", task_id)
            if state.status != "working":
                return state
            await anyio.sleep(state.poll_interval_ms / 1000)


async def _resolve(handle: TaskHandle, ctx: ClaimContext) -> CallToolResult:
    """What a client that only wants the result does with a task: poll it to its end."""
    while True:
        state = await ctx.session.send_request(
            Request(method="tasks/get", params=TaskIdParams(task_id=handle.task_id)), TaskState
        )
        if state.status != "working":
            assert state.result is not None, state
            return CallToolResult.model_validate(state.result)
        await anyio.sleep(state.poll_interval_ms / 1000)


class TasksClientExtension(ClientExtension):
    identifier = TASKS

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return (ResultClaim(result_type="task", model=TaskHandle, resolve=_resolve),)


async def start_task(
    client: Client, tool: str, arguments: dict[str, Any], *, progress_callback: ProgressFnT | None = None
) -> TaskHandle:
    """Call ``tool`` declaring the extension and return the task handle the server answered with."""
    handle = await client.session.call_tool(
        tool, arguments, progress_callback=progress_callback, allow_input_required=False, allow_claimed=True
    )
    assert isinstance(handle, TaskHandle), handle
    return handle
