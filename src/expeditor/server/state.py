"""What the server's lifespan owns: settings, the supervisor (and through it the executor)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import Context

from expeditor.config import Settings
from expeditor.dispatch import DispatchService
from expeditor.server.caller import CallerContext
from expeditor.server.supervisor import Supervisor
from expeditor.state import CampaignStore

__all__ = ["ServerState"]


@dataclass
class ServerState:
    settings: Settings
    supervisor: Supervisor
    stdio_caller: CallerContext
    store: CampaignStore
    dispatcher: DispatchService

    @classmethod
    def of(cls, ctx: Context[Any]) -> ServerState:
        """The state the lifespan yielded, from inside a tool call."""
        state = ctx.request_context.lifespan_context
        assert isinstance(state, cls)
        return state

    def caller(self, ctx: Context[Any]) -> CallerContext:
        """The calling session: from the HTTP header when there is a request, else the stdio environment."""
        request = ctx.request_context.request
        headers: Mapping[str, str] | None = getattr(request, "headers", None)
        return self.stdio_caller.with_header(headers)
