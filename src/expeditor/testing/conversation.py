"""The conversation a fake session has: the stream-json events and transcript lines Claude Code writes.

Shapes follow what Claude Code 2.1.332 printed and wrote here (../shared/reference/claude-code-headless.md),
including its usage trap: stdout carries one ``assistant`` event per content block, each repeating the
message id with the stream's opening usage (``output_tokens: 1``), while the transcript gets one line
per block with the final usage. The ``result`` event's totals count each message once, with its final
usage, which is what a correct usage parser must reproduce.

Standard library only: a default run (no scenario) never imports pydantic, which would double the
agent's start-up time.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from expeditor.testing.channels import Channels, now_iso

__all__ = ["VERSION", "Conversation", "OutputFormat", "Tokens", "cost_usd", "resolve_model"]

VERSION = "fake-0.1"
"""Reported as ``claude_code_version`` and ``version``: nothing mistakes the fake for a real CLI."""
BUDGET_STOP_SUBTYPE = "error_max_budget_usd"
"""The result subtype 2.1.332 ends a session with when it reaches --max-budget-usd."""

OutputFormat = Literal["text", "json", "stream-json"]

_ALIASES = {"sonnet": "claude-sonnet-4-5", "opus": "claude-opus-4-5", "haiku": "claude-haiku-4-5"}
# USD per million tokens: input, output, cache read, cache write; then context window, max output.
_PRICES: dict[str, tuple[float, float, float, float, int, int]] = {
    "opus": (5.0, 25.0, 0.5, 6.25, 200_000, 64_000),
    "haiku": (1.0, 5.0, 0.1, 1.25, 200_000, 64_000),
    "sonnet": (3.0, 15.0, 0.3, 3.75, 200_000, 32_000),
}


@dataclass(frozen=True)
class Tokens:
    """Token figures of one message as the API reports them at the end of its stream."""

    input: int = 10
    output: int = 5
    cache_read: int = 0
    cache_write: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            self.input + other.input,
            self.output + other.output,
            self.cache_read + other.cache_read,
            self.cache_write + other.cache_write,
        )


def resolve_model(name: str) -> str:
    """A full model id for a Claude Code alias (``sonnet`` …); anything else is kept as given."""
    return _ALIASES.get(name, name)


def _prices(model: str) -> tuple[float, float, float, float, int, int]:
    return next((row for family, row in _PRICES.items() if family in model), _PRICES["sonnet"])


def cost_usd(model: str, usage: Tokens) -> float:
    """List-price cost of ``usage`` on ``model`` (unknown models are priced as Sonnet)."""
    p_in, p_out, p_read, p_write, _, _ = _prices(model)
    total = usage.input * p_in + usage.output * p_out + usage.cache_read * p_read + usage.cache_write * p_write
    return round(total / 1_000_000, 6)


def _api_usage(usage: Tokens, *, output: int | None = None) -> dict[str, int]:
    return {
        "input_tokens": usage.input,
        "output_tokens": usage.output if output is None else output,
        "cache_read_input_tokens": usage.cache_read,
        "cache_creation_input_tokens": usage.cache_write,
    }


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


@dataclass
class Conversation:
    """One session's messages, written to stdout (per ``output_format``) and to the transcript."""

    session_id: str
    cwd: str
    model: str
    prompt: str
    out: Channels
    output_format: OutputFormat = "stream-json"
    started: float = field(default_factory=time.monotonic)
    sent: list[tuple[str, Tokens]] = field(default_factory=list[tuple[str, Tokens]])
    """(model, final usage) of every assistant message, once per message."""
    permission_denials: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    last_text: str = ""
    last_tool_use_id: str | None = None
    max_budget_usd: float | None = None
    """--max-budget-usd: as in 2.1.332, a session whose cost reaches it ends with an error_max_budget_usd result."""
    prior_cost_usd: float = 0.0
    """What a resumed session cost before (its transcript's last cost-state): 2.1.332's total_cost_usd adds it."""
    _parent_uuid: str | None = None

    @property
    def streaming(self) -> bool:
        return self.output_format == "stream-json"

    def event(self, record: dict[str, Any]) -> None:
        """A stream-json line on stdout; other output formats print only the final result."""
        if self.streaming:
            self.out.stdout_line(record)

    def _transcript(self, kind: str, message: dict[str, Any], line_uuid: str, **extra: Any) -> None:
        self.out.transcript_line(
            {
                "parentUuid": self._parent_uuid,
                "isSidechain": False,
                "userType": "external",
                "entrypoint": "sdk-cli",
                "cwd": self.cwd,
                "sessionId": self.session_id,
                "version": VERSION,
                "gitBranch": "",
                "type": kind,
                "message": message,
                **extra,
                "uuid": line_uuid,
                "timestamp": now_iso(),
            }
        )
        self._parent_uuid = line_uuid

    def init(
        self,
        *,
        tools: list[str],
        mcp_servers: list[str],
        permission_mode: str,
        skills: list[str],
        plugins: list[dict[str, str]],
    ) -> None:
        """The ``system/init`` event; MCP servers are ``pending``: the fake connects only to call a tool.

        ``skills`` are named as Claude Code names them (``name``, or ``plugin:name`` for a plugin's) and are
        also its ``slash_commands``; ``plugins`` are the ``--plugin-dir`` plugins, ``{"name", "path"}``.
        """
        self.event(
            {
                "type": "system",
                "subtype": "init",
                "cwd": self.cwd,
                "session_id": self.session_id,
                "tools": tools,
                "mcp_servers": [{"name": name, "status": "pending"} for name in mcp_servers],
                "model": self.model,
                "permissionMode": permission_mode,
                "slash_commands": list(skills),
                "skills": list(skills),
                "plugins": [dict(plugin) for plugin in plugins],
                "apiKeySource": "none",
                "claude_code_version": VERSION,
                "output_style": "default",
                "uuid": str(uuid.uuid4()),
            }
        )

    def user_prompt(self) -> None:
        """The transcript's first line of a turn; Claude Code does not echo the prompt on stdout."""
        self._transcript("user", {"role": "user", "content": self.prompt}, str(uuid.uuid4()))

    def assistant(
        self,
        blocks: list[dict[str, Any]],
        usage: Tokens,
        *,
        message_id: str | None = None,
        model: str | None = None,
        stop_reason: str | None = None,
    ) -> list[str]:
        """Send one message, block by block; returns the ids of its tool_use blocks (made up when absent).

        ``blocks`` are API content blocks: ``{"type": "text", "text": …}`` or
        ``{"type": "tool_use", "name": …, "input": …, "id": …}``.
        """
        model = resolve_model(model) if model else self.model
        message_id = message_id or _new_id("msg_")
        request_id = _new_id("req_")
        blocks = [{**b, "id": b.get("id") or _new_id("toolu_")} if b["type"] == "tool_use" else b for b in blocks]
        tool_ids = [str(b["id"]) for b in blocks if b["type"] == "tool_use"]
        self.last_text = next((b["text"] for b in reversed(blocks) if b["type"] == "text"), self.last_text)
        self.last_tool_use_id = tool_ids[-1] if tool_ids else self.last_tool_use_id
        stop_reason = stop_reason or ("tool_use" if tool_ids else "end_turn")
        for block in blocks:
            line_uuid = str(uuid.uuid4())
            base = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [block],
            }
            opening = _api_usage(usage, output=1)
            streamed = {**base, "stop_reason": None, "stop_sequence": None, "usage": opening}
            self.event(self._stdout_envelope("assistant", streamed, line_uuid))
            final = {**base, "stop_reason": stop_reason, "stop_sequence": None, "usage": _api_usage(usage)}
            self._transcript("assistant", final, line_uuid, requestId=request_id)
        self.sent.append((model, usage))
        return tool_ids

    def tool_result(
        self,
        tool_use_id: str,
        content: str | list[dict[str, Any]],
        *,
        is_error: bool | None,
        tool_use_result: Any,
    ) -> None:
        """The ``user`` message that carries a tool's answer, on stdout and in the transcript."""
        block: dict[str, Any] = {"tool_use_id": tool_use_id, "type": "tool_result", "content": content}
        if is_error is not None:
            block["is_error"] = is_error
        message = {"role": "user", "content": [block]}
        line_uuid = str(uuid.uuid4())
        self.event({**self._stdout_envelope("user", message, line_uuid), "tool_use_result": tool_use_result})
        self._transcript("user", message, line_uuid, toolUseResult=tool_use_result)

    def permission_denied(self, tool_name: str, tool_use_id: str, tool_input: dict[str, Any]) -> None:
        """Refuse a tool the way headless Claude Code does when no rule allows it."""
        text = f"Claude requested permissions to use {tool_name}, but you haven't granted it yet."
        self.event(
            {
                "type": "system",
                "subtype": "permission_denied",
                "tool_name": tool_name,
                "tool_use_id": tool_use_id,
                "message": text,
                "uuid": str(uuid.uuid4()),
                "session_id": self.session_id,
            }
        )
        self.permission_denials.append({"tool_name": tool_name, "tool_use_id": tool_use_id, "tool_input": tool_input})
        self.tool_result(tool_use_id, text, is_error=True, tool_use_result=f"Error: {text}")

    def _stdout_envelope(self, kind: str, message: dict[str, Any], line_uuid: str) -> dict[str, Any]:
        return {
            "type": kind,
            "message": message,
            "parent_tool_use_id": None,
            "session_id": self.session_id,
            "uuid": line_uuid,
            "timestamp": now_iso(),
        }

    def result(
        self,
        *,
        text: str | None = None,
        is_error: bool = False,
        subtype: str | None = None,
        usage: Tokens | None = None,
        num_turns: int | None = None,
        cost: float | None = None,
        structured_output: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The final ``result`` event (printed whole in stream-json and json, only its text in text).

        Every figure left out is computed from the messages sent, each counted once; a ``usage``
        override replaces the totals and is attributed to the session's model. A ``structured_output``
        is reported as 2.1.332 reports an answer through ``--json-schema``: beside the result, whose
        text is then the same object as compact JSON.
        """
        if structured_output is not None and text is None:
            text = json.dumps(structured_output, separators=(",", ":"))
        per_model: dict[str, Tokens] = {}
        for model, sent in [(self.model, usage)] if usage is not None else self.sent:
            per_model[model] = per_model.get(model, Tokens(0, 0, 0, 0)) + sent
        model_usage: dict[str, Any] = {}
        for model, total in per_model.items():
            *_, context_window, max_output = _prices(model)
            model_usage[model] = {
                "inputTokens": total.input,
                "outputTokens": total.output,
                "cacheReadInputTokens": total.cache_read,
                "cacheCreationInputTokens": total.cache_write,
                "costUSD": cost_usd(model, total),
                "contextWindow": context_window,
                "maxOutputTokens": max_output,
            }
        totals = sum(per_model.values(), Tokens(0, 0, 0, 0))
        duration_ms = int((time.monotonic() - self.started) * 1000)
        record: dict[str, Any] = {
            "type": "result",
            "subtype": subtype or ("error_during_execution" if is_error else "success"),
            "is_error": is_error,
            "duration_ms": duration_ms,
            "duration_api_ms": duration_ms,
            "num_turns": len(self.sent) if num_turns is None else num_turns,
            "result": self.last_text if text is None else text,
            "stop_reason": "end_turn",
            "session_id": self.session_id,
            "total_cost_usd": round(
                self.prior_cost_usd + (sum(m["costUSD"] for m in model_usage.values()) if cost is None else cost), 6
            ),
            "usage": _api_usage(totals),
            "modelUsage": model_usage,
            "permission_denials": self.permission_denials,
            "terminal_reason": "completed",
            "uuid": str(uuid.uuid4()),
        }
        if structured_output is not None:
            record["structured_output"] = structured_output
        if self.max_budget_usd is not None and record["total_cost_usd"] >= self.max_budget_usd:
            # 2.1.332's budget stop: an error result without a result text, and exit status 1.
            del record["result"]
            record.update(
                subtype=BUDGET_STOP_SUBTYPE,
                is_error=True,
                errors=[f"Reached maximum budget (${self.max_budget_usd:g})"],
                terminal_reason="budget_exhausted",
            )
        self.out.transcript_line(
            {"type": "cost-state", "sessionId": self.session_id, "totalCostUSD": record["total_cost_usd"]}
        )
        self.out.stdout_line(record.get("result", "") if self.output_format == "text" else record)
        return record

    def budget_reached(self) -> bool:
        """Whether the messages sent so far cost the session's --max-budget-usd (checked after each turn)."""
        spent = self.prior_cost_usd + sum(cost_usd(model, tokens) for model, tokens in self.sent)
        return self.max_budget_usd is not None and spent >= self.max_budget_usd
