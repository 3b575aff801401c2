"""A tiny stdio MCP server for the fake agent's ``call_tool`` step: it echoes, and reports what it inherited.

Run as a script (``python tests/support/echo_mcp_server.py``) from an ``--mcp-config`` entry. The
``session_env`` tool answers with the session ids found in the server's own environment, which is how a
test proves that the agent started the server the way Claude Code does (``CLAUDE_CODE_SESSION_ID`` set
to the calling session's id, the config's ``env`` on top of the agent's environment).
"""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel

__all__ = ["SessionEnv", "server"]

server = MCPServer("echo", version="0.1.0")


class SessionEnv(BaseModel):
    """What the server process inherited: the ids a caller-aware server would read."""

    claude_code_session_id: str | None
    expeditor_session_id: str | None
    echo_config_value: str | None
    pid: int
    ppid: int


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def session_env() -> SessionEnv:
    """Report the session ids and the config-provided variable seen in this server's environment."""
    return SessionEnv(
        claude_code_session_id=os.environ.get("CLAUDE_CODE_SESSION_ID"),
        expeditor_session_id=os.environ.get("EXPEDITOR_SESSION_ID"),
        echo_config_value=os.environ.get("ECHO_CONFIG_VALUE"),
        pid=os.getpid(),
        ppid=os.getppid(),
    )


if __name__ == "__main__":
    server.run()
