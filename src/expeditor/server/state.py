"""What the server's lifespan owns: the runtime (settings, store, executor, supervisor, jobs) and the dispatcher."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import Context

from expeditor.config import Settings
from expeditor.dispatch import DispatchService
from expeditor.errors import InvalidInput
from expeditor.runs import CallerContext, Runtime, Supervisor
from expeditor.server.task_runs import TaskBoard
from expeditor.state import CampaignStore

__all__ = ["ServerState"]


@dataclass
class ServerState:
    runtime: Runtime
    dispatcher: DispatchService
    stdio_caller: CallerContext
    # The MCP tasks of this server (None when the mcp_tasks setting turns them off).
    tasks: TaskBoard | None = None

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def supervisor(self) -> Supervisor:
        return self.runtime.supervisor

    @property
    def store(self) -> CampaignStore:
        return self.runtime.store

    @classmethod
    def of(cls, ctx: Context[Any]) -> ServerState:
        """The state the lifespan yielded, from inside a tool call."""
        state = ctx.request_context.lifespan_context
        assert isinstance(state, cls)
        return state

    def caller(self, ctx: Context[Any]) -> CallerContext:
        """The calling session: from the bearer token when there is an HTTP request, else the stdio environment."""
        return self.caller_of(ctx.request_context.request)

    def caller_of(self, request: object) -> CallerContext:
        """The caller of ``request`` (the transport's request object, None over stdio)."""
        headers: Mapping[str, str] | None = getattr(request, "headers", None)
        if headers is None:
            return self.stdio_caller
        caller = self.stdio_caller.over_http(
            headers.get("authorization"), server_token=self.settings.http_token, sessions=self.supervisor.credentials
        )
        if caller is None:
            # The bearer check let it in, so its run ended between that check and this call.
            raise InvalidInput("this session's credential is no longer valid: the run it was issued for has ended")
        return caller
