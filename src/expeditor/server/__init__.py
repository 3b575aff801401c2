"""The MCP transport: run_skill, dispatch and their companions, over stdio or streamable HTTP.

The service behind the tools (launching, supervising and recording runs) is :mod:`expeditor.runs`.
"""

from expeditor.server.app import StateHolder, build_server
from expeditor.server.serve import serve

__all__ = ["StateHolder", "build_server", "serve"]
