"""How a tool is declared: its title, annotations, and its docstring as a description without indentation."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

__all__ = ["READ_ONLY", "tool"]

_Tool = TypeVar("_Tool", bound=Callable[..., Any])

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
"""A tool that only reads expeditor's own records: safe to call at any time, as often as wanted."""


def tool(server: MCPServer[Any], *, title: str, annotations: ToolAnnotations) -> Callable[[_Tool], _Tool]:
    """Register the decorated function as a tool; its docstring, dedented, is the description a model reads."""

    def register(function: _Tool) -> _Tool:
        description = inspect.cleandoc(function.__doc__ or "")
        return server.tool(title=title, description=description, annotations=annotations)(function)

    return register
