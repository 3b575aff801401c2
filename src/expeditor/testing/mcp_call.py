"""MCP for the fake agent: read ``--mcp-config`` like Claude Code, decide permissions, call one tool.

The call goes through the official SDK's ``Client``, so a test exercises a real server over a real
transport. A stdio server gets the agent's whole environment, the entry's ``env`` on top, and what
Claude Code adds (``CLAUDE_CODE_SESSION_ID`` = the calling session's id among them): that is how a
nested ``expeditor serve`` learns who called it. The SDK is imported inside :func:`call_tool` only:
importing it costs more than the rest of the agent's start-up.

One difference from Claude Code is left as it is: the SDK starts a stdio server in a new session
(its own process group), where Claude Code keeps it in its own group.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["McpServer", "ToolOutcome", "call_tool", "load_mcp_configs", "permitted"]


@dataclass(frozen=True)
class McpServer:
    """One ``mcpServers`` entry: stdio (``command``, ``args``, ``env``) or http (``url``, ``headers``)."""

    name: str
    transport: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict[str, str])
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict[str, str])


@dataclass(frozen=True)
class ToolOutcome:
    """What came back: the text the model reads, whether it is an error, and any structured content."""

    text: str
    is_error: bool
    structured: dict[str, Any] | None = None


def _read_config(value: str) -> dict[str, Any]:
    """A ``--mcp-config`` value is inline JSON or a file path; errors read like Claude Code's."""
    if value.lstrip().startswith("{"):
        text, origin = value, "inline JSON"
    else:
        path = Path(value).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"MCP config file not found: {path}")
        text, origin = path.read_text(), str(path)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{origin}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("mcpServers"), dict):
        raise ValueError(f'{origin}: expected {{"mcpServers": {{name: server, ...}}}}')
    return data["mcpServers"]


def _server(name: str, entry: Any) -> McpServer:
    if not isinstance(entry, dict):
        raise ValueError(f"mcpServers.{name}: expected an object")
    transport = str(entry.get("type", "stdio"))
    if transport == "stdio":
        if not isinstance(entry.get("command"), str):
            raise ValueError(f"mcpServers.{name}: a stdio server needs a 'command'")
        return McpServer(
            name,
            transport,
            command=entry["command"],
            args=tuple(str(arg) for arg in entry.get("args", [])),
            env={str(k): str(v) for k, v in dict(entry.get("env", {})).items()},
        )
    if transport in ("http", "sse"):
        if not isinstance(entry.get("url"), str):
            raise ValueError(f"mcpServers.{name}: an {transport} server needs a 'url'")
        headers = {str(k): str(v) for k, v in dict(entry.get("headers", {})).items()}
        return McpServer(name, transport, url=entry["url"], headers=headers)
    raise ValueError(f"mcpServers.{name}: unknown type {transport!r} (stdio, http or sse)")


def load_mcp_configs(values: list[str]) -> dict[str, McpServer]:
    """Every server of every ``--mcp-config`` value, later values overriding earlier names.

    Raises ValueError with the detail Claude Code prints after ``Error: Invalid MCP configuration:``.
    """
    servers: dict[str, McpServer] = {}
    for value in values:
        for name, entry in _read_config(value).items():
            servers[name] = _server(name, entry)
    return servers


def _matches(rule: str, tool_name: str) -> bool:
    server_prefix = "__".join(tool_name.split("__")[:2])
    return rule in (tool_name, server_prefix, f"{server_prefix}__*")


def permitted(tool_name: str, *, allow: list[str], deny: list[str], bypass: bool) -> bool:
    """Whether headless Claude Code would run the tool: deny rules win, then bypass, then allow rules."""
    if any(_matches(rule, tool_name) for rule in deny):
        return False
    return bypass or any(_matches(rule, tool_name) for rule in allow)


def call_tool(
    server: McpServer,
    tool: str,
    arguments: dict[str, Any],
    *,
    session_id: str,
    cwd: str,
    timeout: float | None,
    deliver: Callable[[ToolOutcome], None],
) -> None:
    """Connect, call one tool, hand its outcome to ``deliver``, disconnect.

    ``deliver`` runs as soon as the answer arrives, before the connection is torn down: Claude Code
    keeps its servers connected and writes a tool's result at once, and a watcher that saw the
    caller's marker go away expects that line promptly. Any failure becomes an error outcome, as
    the model would see it.
    """
    import anyio

    delivered = False

    def deliver_once(outcome: ToolOutcome) -> None:
        nonlocal delivered
        if not delivered:
            delivered = True
            deliver(outcome)

    try:
        anyio.run(_call, server, tool, arguments, session_id, cwd, timeout, deliver_once)
    except Exception as exc:  # the boundary: a broken server is a tool error for the model, not a crash
        deliver_once(ToolOutcome(f"Error: MCP call {server.name}/{tool} failed: {_describe(exc)}", is_error=True))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}"


async def _call(
    server: McpServer,
    tool: str,
    arguments: dict[str, Any],
    session_id: str,
    cwd: str,
    read_timeout: float | None,
    deliver: Callable[[ToolOutcome], None],
) -> None:
    from mcp import Client, StdioServerParameters

    if server.transport == "stdio":
        env = {
            **os.environ,
            **server.env,
            "CLAUDECODE": "1",
            "CLAUDE_CODE_ENTRYPOINT": "sdk-cli",
            "CLAUDE_CODE_SESSION_ID": session_id,
            "CLAUDE_PROJECT_DIR": cwd,
        }
        params = StdioServerParameters(command=server.command, args=list(server.args), env=env)
        async with Client(params, read_timeout_seconds=read_timeout) as client:
            deliver(_outcome(await client.call_tool(tool, arguments)))
    elif server.transport == "http":
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        async with (
            httpx2.AsyncClient(headers=server.headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
            Client(streamable_http_client(server.url, http_client=http), read_timeout_seconds=read_timeout) as client,
        ):
            deliver(_outcome(await client.call_tool(tool, arguments)))
    else:
        raise ValueError(f"the fake agent does not speak the {server.transport!r} transport")


def _outcome(result: Any) -> ToolOutcome:
    text = "\n".join(getattr(block, "text", "") for block in result.content if getattr(block, "type", "") == "text")
    return ToolOutcome(text, is_error=bool(result.is_error), structured=result.structured_content)
