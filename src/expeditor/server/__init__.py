"""The MCP server: run_skill, dispatch and their companions, over stdio or streamable HTTP."""

from expeditor.server.app import StateHolder, build_server
from expeditor.server.caller import CallerContext

__all__ = ["CallerContext", "StateHolder", "build_server"]
