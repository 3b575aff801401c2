"""The MCP server: run_skill, dispatch and their companions, over stdio or streamable HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from expeditor.server.app import StateHolder, build_server
    from expeditor.server.caller import CallerContext

__all__ = ["CallerContext", "StateHolder", "build_server"]


def __getattr__(name: str) -> Any:
    # Lazy: the dispatch service (which the app imports) builds on server.caller and server.supervisor.
    if name in ("StateHolder", "build_server"):
        from expeditor.server import app

        return getattr(app, name)
    if name == "CallerContext":
        from expeditor.server.caller import CallerContext

        return CallerContext
    raise AttributeError(f"module 'expeditor.server' has no attribute {name!r}")
