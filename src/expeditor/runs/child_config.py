"""The ``--mcp-config`` expeditor writes for the orchestrator sessions it launches.

By default the child gets a nested stdio ``expeditor serve`` (absolute interpreter, absolute home
and marker dir, the parent's settings in its environment) that learns its caller from
``CLAUDE_CODE_SESSION_ID``. When expeditor runs as a shared HTTP server, the child gets an
``http`` entry pointing back at it that carries the child's own session token (never the server's):
the token alone says who is calling, so no caller header is written.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from expeditor.config import Settings
from expeditor.executor.claude import SECRET_SETTINGS
from expeditor.executor.models import SessionKind
from expeditor.state.store_url import without_password

__all__ = ["SERVER_NAME", "allowed_tools", "child_mcp_config", "settings_environment"]

SERVER_NAME = "expeditor"
_TOOLS_BY_KIND: dict[SessionKind, tuple[str, ...]] = {
    SessionKind.ORCHESTRATOR: ("run_skill", "list_sessions", "get_dispatch"),
    SessionKind.SKILL: (),
    SessionKind.PIPELINE: (),
    SessionKind.COMMAND: (),
}


def allowed_tools(kind: SessionKind) -> tuple[str, ...]:
    """``--allowedTools`` entries for the expeditor tools a session of ``kind`` may call."""
    return tuple(f"mcp__{SERVER_NAME}__{tool}" for tool in _TOOLS_BY_KIND[kind])


def settings_environment(settings: Settings) -> dict[str, str]:
    """The settings that were set explicitly, as ``EXPEDITOR_*`` variables, so a nested server agrees.

    Credentials excepted: a nested stdio server needs none, and its environment is the session's to read.
    The shared store's URL goes without its password: libpq finds that in the password file
    (``PGPASSFILE``, ``~/.pgpass``), which the child inherits with the rest of the environment (Claude
    Code passes its whole environment to a stdio server it starts), so no config file ever holds it.
    """
    env: dict[str, str] = {}
    for name in sorted(settings.model_fields_set - SECRET_SETTINGS):
        value: Any = getattr(settings, name)
        if value is None:
            continue
        if name == "allowed_roots":
            text = ":".join(str(root) for root in value)
        elif isinstance(value, dict):
            # A mapping setting is read back from the environment as JSON, never as Python's repr.
            text = json.dumps(value, separators=(",", ":"))
        elif isinstance(value, tuple):
            text = ",".join(str(item) for item in value)  # the host and origin lists: comma-separated
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"EXPEDITOR_{name.upper()}"] = text
    if settings.store_url is not None:
        env["EXPEDITOR_STORE_URL"] = without_password(settings.store_url.get_secret_value())
    env["EXPEDITOR_HOME"] = str(settings.home)
    env["EXPEDITOR_MARKER_DIR"] = str(settings.markers_path)
    return env


def child_mcp_config(
    settings: Settings, *, kind: SessionKind, http_url: str | None = None, session_token: str | None = None
) -> dict[str, Any] | None:
    """The MCP config for a child of ``kind``, or None when it may call no expeditor tool.

    Over HTTP (``http_url``) the entry authenticates with ``session_token``, the child's own credential.
    """
    if not _TOOLS_BY_KIND[kind]:
        return None
    # Claude Code's per-server idle timeout (ms) must outlast the longest call the child makes.
    timeout_ms = int((settings.timeout + settings.kill_grace + 60) * 1000)
    if http_url is not None:
        if session_token is None:
            raise ValueError("an http entry needs the child's session token")
        headers = {"authorization": f"Bearer {session_token}"}
        entry: dict[str, Any] = {"type": "http", "url": http_url, "headers": headers, "timeout": timeout_ms}
    else:
        entry = {
            "type": "stdio",
            "command": sys.executable,
            "args": ["-m", "expeditor", "serve"],
            "env": settings_environment(settings),
            "timeout": timeout_ms,
        }
    return {"mcpServers": {SERVER_NAME: entry}}
