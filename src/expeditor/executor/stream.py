"""Parsing Claude Code's ``--output-format stream-json`` while it streams.

The stream is untrusted bytes: lines may arrive in pieces, be megabytes long, not be JSON,
or be events this code has never heard of. None of that may raise. The session's facts come
from the ``result`` event; ``assistant`` events are used only for peak context (their usage
is the stream's opening count, repeated once per content block).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from expeditor.usage.models import SessionUsage, TokenUsage, UsageSource

__all__ = ["DEFAULT_MAX_LINE_BYTES", "LineSplitter", "ResultFacts", "StreamState", "decode_event"]

DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024


class LineSplitter:
    """Turns chunks of bytes into complete lines.

    A line longer than ``max_line_bytes`` is dropped (and counted) instead of being buffered
    without bound; the splitter resynchronises at the next newline.
    """

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        self._buffer = bytearray()
        self._discarding = False
        self.dropped_lines = 0

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                break
            self._take(data[start:newline], lines, complete=True)
            start = newline + 1
        self._take(data[start:], lines, complete=False)
        return lines

    def flush(self) -> list[bytes]:
        """The last line when the stream ended without a newline."""
        lines: list[bytes] = []
        if self._buffer and not self._discarding:
            lines.append(bytes(self._buffer))
        self._buffer.clear()
        self._discarding = False
        return lines

    def _take(self, piece: bytes, lines: list[bytes], *, complete: bool) -> None:
        if not self._discarding:
            self._buffer += piece
            if len(self._buffer) > self._max:
                self._buffer.clear()
                self._discarding = True
                self.dropped_lines += 1
        if complete:
            if not self._discarding:
                lines.append(bytes(self._buffer))
            self._buffer.clear()
            self._discarding = False


def decode_event(line: bytes) -> dict[str, Any] | None:
    """One stream-json event, or None for anything that is not a JSON object with a string type."""
    line = line.strip()
    if not line.startswith(b"{"):
        return None
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if isinstance(event, dict) and isinstance(event.get("type"), str):
        return event  # pyright: ignore[reportUnknownVariableType]
    return None


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value == value and 0 <= value < 1e18:
        return int(value)
    return 0


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value and value >= 0 else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}  # pyright: ignore[reportUnknownVariableType]


def context_size(usage: dict[str, Any]) -> int:
    """Peak-context contribution of one message: its input plus cache reads and writes."""
    return (
        _int(usage.get("input_tokens"))
        + _int(usage.get("cache_read_input_tokens"))
        + _int(usage.get("cache_creation_input_tokens"))
    )


@dataclass(frozen=True)
class ResultFacts:
    """What the ``result`` event says about the session."""

    session_id: str | None
    text: str
    is_error: bool
    subtype: str
    usage: SessionUsage
    errors: tuple[str, ...] = ()
    permission_denials: tuple[str, ...] = ()


@dataclass
class StreamState:
    """Facts gathered from a session's stdout, one event at a time."""

    init_session_id: str | None = None
    model: str | None = None
    result: ResultFacts | None = None
    last_assistant_text: str = ""
    events: int = 0
    _contexts: dict[str, tuple[str, int]] = field(default_factory=dict[str, tuple[str, int]])

    def handle(self, event: dict[str, Any]) -> None:
        """Record what ``event`` says; unknown or malformed events are counted and ignored."""
        self.events += 1
        kind = event.get("type")
        if kind == "system" and event.get("subtype") == "init":
            session_id = event.get("session_id")
            self.init_session_id = session_id if isinstance(session_id, str) else None
            model = event.get("model")
            self.model = model if isinstance(model, str) else None
        elif kind == "assistant":
            self._assistant(_dict(event.get("message")))
        elif kind == "result":
            self.result = self._result(event)

    def peak_context(self, model: str | None = None) -> int:
        return max(
            (size for message_model, size in self._contexts.values() if model in (None, message_model)),
            default=0,
        )

    def _assistant(self, message: dict[str, Any]) -> None:
        message_id = message.get("id")
        if isinstance(message_id, str):
            model = message.get("model")
            size = context_size(_dict(message.get("usage")))
            _, previous = self._contexts.get(message_id, ("", 0))
            self._contexts[message_id] = (model if isinstance(model, str) else "", max(previous, size))
        content = message.get("content")
        if isinstance(content, list):
            for block in content:  # pyright: ignore[reportUnknownVariableType]
                block_dict = _dict(block)
                if block_dict.get("type") == "text" and isinstance(block_dict.get("text"), str):
                    self.last_assistant_text = block_dict["text"]

    def _result(self, event: dict[str, Any]) -> ResultFacts:
        usage = _dict(event.get("usage"))
        by_model: dict[str, TokenUsage] = {}
        for model, figures in _dict(event.get("modelUsage")).items():
            figures_dict = _dict(figures)
            by_model[str(model)] = TokenUsage(
                input_tokens=_int(figures_dict.get("inputTokens")),
                output_tokens=_int(figures_dict.get("outputTokens")),
                cache_read_tokens=_int(figures_dict.get("cacheReadInputTokens")),
                cache_write_tokens=_int(figures_dict.get("cacheCreationInputTokens")),
                peak_context=self.peak_context(str(model)),
                cost_usd=_float_or_none(figures_dict.get("costUSD")),
            )
        if len(by_model) == 1:
            (only,) = by_model
            by_model[only] = by_model[only].model_copy(update={"turns": _int(event.get("num_turns"))})
        total = TokenUsage(
            input_tokens=_int(usage.get("input_tokens")),
            output_tokens=_int(usage.get("output_tokens")),
            cache_read_tokens=_int(usage.get("cache_read_input_tokens")),
            cache_write_tokens=_int(usage.get("cache_creation_input_tokens")),
            turns=_int(event.get("num_turns")),
            peak_context=self.peak_context(),
            cost_usd=_float_or_none(event.get("total_cost_usd")),
        )
        duration = event.get("duration_ms")
        session_id = event.get("session_id")
        text = event.get("result")
        subtype = event.get("subtype")
        errors = event.get("errors")
        denials = event.get("permission_denials")
        return ResultFacts(
            errors=tuple(str(e) for e in errors if isinstance(e, str)) if isinstance(errors, list) else (),  # pyright: ignore[reportUnknownVariableType]
            permission_denials=tuple(
                str(_dict(d).get("tool_name"))
                for d in denials
                if _dict(d).get("tool_name")  # pyright: ignore[reportUnknownVariableType]
            )
            if isinstance(denials, list)
            else (),
            session_id=session_id if isinstance(session_id, str) else None,
            text=text if isinstance(text, str) else "",
            is_error=event.get("is_error") is True,
            subtype=subtype if isinstance(subtype, str) else "",
            usage=SessionUsage(
                total=total,
                by_model=by_model,
                source=UsageSource.RESULT_EVENT,
                duration_ms=_int(duration) if duration is not None else None,
            ),
        )
