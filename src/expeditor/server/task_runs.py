"""The MCP tasks this server is running or has finished: a long tool call served in the background.

A task is the same tool call a headless client awaits (run_skill or dispatch, the same managed run
with its marker, record and kill path), driven in the server's task group instead of the request,
so the client polls ``tasks/get`` for it. Its status line comes from the run's ``RunControl``, the
source of the blocking call's progress messages. A finished task is kept ``task_retention`` seconds
for a last poll, then forgotten; the run's outcome stays in the store.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.abc
from mcp.types import CallToolResult, TextContent

from expeditor.executor import RunControl, Termination
from expeditor.runs import describe_activity

__all__ = ["TaskBoard", "TaskRun", "TaskStatus", "current_task"]

logger = logging.getLogger(__name__)

TaskStatus = Literal["working", "completed", "failed", "cancelled"]

# A tool call failed in the tool: the run or its arguments, said in the result's text.
_TOOL_ERROR = -32000
_INTERNAL_ERROR = -32603

_current: contextvars.ContextVar[TaskRun | None] = contextvars.ContextVar("expeditor_task", default=None)


def current_task() -> TaskRun | None:
    """The task this tool call is served as, or None when its caller awaits it (no progress to send then)."""
    return _current.get()


def _epoch_ms_iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"


def _text_of(result: CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


@dataclass
class TaskRun:
    """One tool call served as a task: its run's control, its state, and its result once it ends."""

    task_id: str
    tool: str
    label: str
    control: RunControl = field(init=False)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    status: TaskStatus = "working"
    result: CallToolResult | None = None
    error: dict[str, Any] | None = None
    cancel_reason: str | None = None
    finished_at: float | None = None
    ended: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def __post_init__(self) -> None:
        # The run carries its task id into the live-session registry, so every `status` shows it.
        self.control = RunControl(task_id=self.task_id)

    @property
    def session_id(self) -> str | None:
        session = self.control.session
        return None if session is None else session.session_id

    def status_message(self) -> str:
        """What the blocking call's progress notification would say now, or how the task ended."""
        if self.status == "working":
            line = describe_activity(self.control, self.created_at)
            return f"{self.label}: {line}" if self.label else line
        if self.status == "cancelled":
            return self.cancel_reason or "cancelled"
        if self.result is not None:
            return _text_of(self.result).split("\n", 1)[0]
        return str((self.error or {}).get("message", self.status))

    def wire(self, poll_interval_ms: int) -> dict[str, Any]:
        """The task as ``tasks/get`` (and the call that created it) answers it."""
        found: dict[str, Any] = {
            "taskId": self.task_id,
            "status": self.status,
            "statusMessage": self.status_message(),
            "pollIntervalMs": poll_interval_ms,
            "createdAt": _epoch_ms_iso(self.created_at),
            "lastUpdatedAt": _epoch_ms_iso(self.updated_at),
        }
        if self.result is not None and self.status != "working":
            found["result"] = self.result.model_dump(by_alias=True, mode="json", exclude_none=True)
        if self.error is not None:
            found["error"] = self.error
        return found

    def finish(self, result: CallToolResult | None, error: dict[str, Any] | None) -> None:
        run = self.control.result
        if self.cancel_reason is not None or (run is not None and run.termination is Termination.CANCELLED):
            self.status = "cancelled"
            self.cancel_reason = self.cancel_reason or (run.reason if run is not None else None)
        elif error is not None or (result is not None and result.is_error):
            self.status = "failed"
        else:
            self.status = "completed"
        self.result = result
        if self.status == "failed" and error is None and result is not None:
            error = {"code": _TOOL_ERROR, "message": _text_of(result), "data": result.structured_content}
        self.error = error
        self.updated_at = self.finished_at = time.time()
        self.ended.set()


ToolCall = Callable[[], Awaitable[Any]]


class TaskBoard:
    """This server's tasks, driven in one task group that lives as long as the server."""

    def __init__(self, group: anyio.abc.TaskGroup, *, retention: float, kill_grace: float) -> None:
        self._group = group
        self._retention = retention
        self._kill_grace = kill_grace
        self._tasks: dict[str, TaskRun] = {}

    def start(self, tool: str, label: str, call: ToolCall) -> TaskRun:
        """Serve ``call`` as a new task; it runs in the server's task group with the task as ``current_task``."""
        self.forget_expired()
        task = TaskRun(task_id=str(uuid.uuid4()), tool=tool, label=label)
        self._tasks[task.task_id] = task

        async def drive() -> None:
            _current.set(task)
            result: CallToolResult | None = None
            error: dict[str, Any] | None = None
            try:
                with task.scope:
                    outcome = await call()
                    if isinstance(outcome, CallToolResult):
                        result = outcome
                    else:
                        error = {"code": _INTERNAL_ERROR, "message": f"{tool} returned no tool result"}
            except Exception as exc:
                logger.exception("task %s (%s) failed", task.task_id, tool)
                error = {"code": getattr(exc, "code", _INTERNAL_ERROR), "message": str(exc) or type(exc).__name__}
            finally:
                if task.scope.cancelled_caught and result is None and error is None:
                    task.cancel_reason = task.cancel_reason or "the task was stopped before its run ended"
                task.finish(result, error)
                logger.info("task %s (%s) ended %s", task.task_id, tool, task.status)

        # A fresh context: the task reads itself from it, and nothing of the request's context leaks back.
        self._group.start_soon(drive, name=f"task {task.task_id}")
        return task

    def get(self, task_id: str) -> TaskRun | None:
        self.forget_expired()
        return self._tasks.get(task_id)

    def tasks(self) -> list[TaskRun]:
        self.forget_expired()
        return list(self._tasks.values())

    def forget_expired(self) -> None:
        now = time.time()
        for task_id, task in list(self._tasks.items()):
            if task.finished_at is not None and now - task.finished_at >= self._retention:
                del self._tasks[task_id]

    async def cancel(self, task: TaskRun, reason: str) -> None:
        """Stop the task's run as ``cancel_session`` would, and return once it ended (bounded)."""
        if task.ended.is_set():
            return
        task.cancel_reason = reason
        task.control.cancel(reason)
        with anyio.move_on_after(self._kill_grace + 2):
            await task.ended.wait()
        if not task.ended.is_set():
            # Not yet a session (waiting for a dispatch slot): cancelling its driver kills whatever it started.
            task.scope.cancel()
            with anyio.move_on_after(5):
                await task.ended.wait()

    async def close(self, reason: str, *, grace: float, bound: float) -> None:
        """At server exit: every working task's run is cancelled with ``reason``, then the group is stopped."""
        for task in self._tasks.values():
            if not task.ended.is_set():
                task.cancel_reason = reason
                task.control.cancel(reason, grace=grace)
        with anyio.CancelScope(shield=True), anyio.move_on_after(grace + bound):
            for task in list(self._tasks.values()):
                await task.ended.wait()
        self._group.cancel_scope.cancel()
