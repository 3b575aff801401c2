"""The expeditor MCP server: one ``MCPServer`` whose lifespan owns every live session."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer

from expeditor import __version__
from expeditor.config import Settings
from expeditor.dispatch import DispatchService, Launcher
from expeditor.runs import CallerContext, Runtime, open_runtime
from expeditor.server.boundary import ExpeditorMCPServer
from expeditor.server.dispatch_tools import register_dispatch_tools
from expeditor.server.recipe_tools import register_recipe_tools
from expeditor.server.report_tools import register_report_tools
from expeditor.server.state import ServerState
from expeditor.server.task_runs import TaskBoard
from expeditor.server.tasks import TasksExtension
from expeditor.server.tools import register_tools

__all__ = ["StateHolder", "build_server"]

logger = logging.getLogger(__name__)

INSTRUCTIONS = """\
expeditor runs headless Claude Code sessions for you and supervises them. Use run_skill to hand
one skill command (e.g. "/make-plan 42") to a fresh session and wait for its result; the session
is killed with its process tree only if it is truly stuck, and you are not judged stuck while you
wait. dispatch runs a named job of a campaign once: a job that already succeeded returns its
recorded result instead of running again. list_sessions shows what is running; cancel_session
stops one."""


class StateHolder:
    """Where the lifespan leaves its state, so a signal handler outside the server can reach it."""

    def __init__(self) -> None:
        self.state: ServerState | None = None

    def session_token_is_live(self, token: str) -> bool:
        """Whether ``token`` is the credential of a run this server has live (the bearer check asks)."""
        state = self.state
        return state is not None and state.supervisor.credentials.identify(token) is not None


def build_server(
    settings: Settings,
    *,
    env: Mapping[str, str] | None = None,
    http_url: str | None = None,
    holder: StateHolder | None = None,
) -> MCPServer[ServerState]:
    """The server for ``settings``. ``env`` is the environment children inherit and callers are read from."""
    environment = dict(os.environ if env is None else env)
    holder = holder or StateHolder()

    @contextlib.asynccontextmanager
    async def lifespan(_server: MCPServer[ServerState]) -> AsyncGenerator[ServerState]:
        async with (
            open_runtime(
                settings,
                env=environment,
                http_url=http_url,
                closing_reason="the expeditor server is shutting down",
                owner_kind="server",
            ) as runtime,
            anyio.create_task_group() as task_group,
            contextlib.AsyncExitStack() as launchers,
        ):
            tasks = (
                TaskBoard(task_group, retention=settings.task_retention, kill_grace=settings.kill_grace)
                if settings.mcp_tasks
                else None
            )
            state = ServerState(
                runtime=runtime,
                dispatcher=DispatchService(
                    runtime, launcher=await _queue_launcher(runtime, launchers, CallerContext.from_env(environment))
                ),
                stdio_caller=CallerContext.from_env(environment),
                tasks=tasks,
            )
            logger.info(
                "server pid=%d home=%s caller=%s kind=%s",
                os.getpid(),
                settings.home,
                state.stdio_caller.session_id,
                state.stdio_caller.kind,
            )
            holder.state = state
            try:
                yield state
            finally:
                holder.state = None
                # Tasks end with the server (a client sends no tasks/cancel when it exits): their runs cancelled.
                if tasks is not None:
                    await tasks.close("the expeditor server is shutting down", grace=settings.shutdown_grace, bound=2.0)
                task_group.cancel_scope.cancel()

    server: MCPServer[Any] = ExpeditorMCPServer(
        "expeditor",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        extensions=[TasksExtension()] if settings.mcp_tasks else [],
    )
    register_tools(server)
    register_dispatch_tools(server)
    register_recipe_tools(server)
    register_report_tools(server)
    return server


async def _queue_launcher(
    runtime: Runtime, stack: contextlib.AsyncExitStack, stdio_caller: CallerContext
) -> Launcher | None:
    """In queue mode the launcher that defers dispatches to the workers (open for the server's life); else None.

    A session's nested server has none: no launched session may dispatch (the recursion rule), so it would
    only hold a queue connection open for nothing.
    """
    if runtime.settings.dispatch_mode != "queue" or stdio_caller.kind is not None:
        return None
    # The queue extra (procrastinate) is imported only by a process in queue mode.
    from expeditor.queue.launcher import open_queue_launcher

    return await stack.enter_async_context(open_queue_launcher(runtime))
