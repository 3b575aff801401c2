"""What a tool call returns: a short text a model reads at a glance, and the full result as structured content.

The text is the first (and only) content block; the structured content is the result model dumped
as JSON, times as ISO 8601, matching the tool's output schema.
"""

from __future__ import annotations

from collections.abc import Iterable

from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel

from expeditor.executor import RunResult
from expeditor.usage import SessionUsage

__all__ = ["lines", "run_lines", "tool_result", "usage_line"]


def tool_result(text: str, data: BaseModel, *, is_error: bool = False) -> CallToolResult:
    """``text`` for the model to read, ``data`` as the structured content."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=data.model_dump(mode="json", by_alias=True),
        is_error=is_error,
    )


def lines(items: Iterable[str], *, empty: str) -> str:
    """One line per item, or ``empty`` when there is none."""
    text = "\n".join(items)
    return text or empty


def usage_line(usage: SessionUsage) -> str:
    total = usage.total
    cost = "" if total.cost_usd is None else f", ${total.cost_usd:.4f}"
    partial = " (partial: the session ended before its result event)" if usage.partial else ""
    turns = f"{total.turns} turn" if total.turns == 1 else f"{total.turns} turns"
    return (
        f"usage: {total.input_tokens:,} input, {total.output_tokens:,} output, {total.cache_read_tokens:,} cache read, "
        f"{total.cache_write_tokens:,} cache write tokens; {turns}{cost}{partial}"
    )


def run_lines(result: RunResult, *, with_usage: bool = True) -> list[str]:
    """A run's verdict, why, its usage, and its final text, as lines."""
    verdict = "succeeded" if result.success else "failed"
    found = [
        f"{verdict}: {result.termination.value} after {result.duration_s:.1f} s (session {result.session_id})",
        f"reason: {result.reason}",
    ]
    if with_usage:
        found.append(usage_line(result.usage))
    if result.permission_denials:
        found.append(f"refused tools: {', '.join(result.permission_denials)}")
    if result.result_text:
        found += ["", result.result_text]
    elif not result.success and result.stderr_tail:
        found += ["", "stderr (last lines):", result.stderr_tail.rstrip()]
    return found
