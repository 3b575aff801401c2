"""Claude Code's stream-json, as lines of untrusted bytes, and the token usage they carry.

Lines may arrive in pieces, be megabytes long, not be JSON, not be UTF-8, or be events this code
has never heard of; none of that may raise, and text kept from them goes through ``encodable``. A
session's true usage is in its ``result`` event; the ``assistant`` events only give each message's
context size (their usage is the stream's opening count, repeated once per content block). Both
the live stream and a transcript are read this way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from expeditor.usage.models import SessionUsage, TokenUsage, UsageSource

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "LineSplitter",
    "as_count",
    "as_dict",
    "context_size",
    "decode_event",
    "encodable",
    "result_usage",
]

DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024
# JSON may escape half of a UTF-16 pair alone (\ud800: what a JavaScript string cut mid-pair
# serialises to); Python keeps it as a lone surrogate, which UTF-8, pydantic and SQLite refuse.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def encodable(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, so it always encodes as UTF-8."""
    return text if text.isascii() else _LONE_SURROGATE.sub("\ufffd", text)


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
    """One stream-json event, or None for anything that is not a JSON object with a string type.

    Bytes that are not UTF-8 become U+FFFD: one bad byte must not cost the whole event (a lost
    ``result`` turns a finished session into a crashed one). Strings inside may still hold lone
    surrogates; whoever keeps one passes it through ``encodable``.
    """
    line = line.strip()
    if not line.startswith(b"{"):
        return None
    try:
        event = json.loads(line.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return None
    if isinstance(event, dict) and isinstance(event.get("type"), str):
        return event  # pyright: ignore[reportUnknownVariableType]
    return None


def as_count(value: Any) -> int:
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


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}  # pyright: ignore[reportUnknownVariableType]


def context_size(usage: dict[str, Any]) -> int:
    """Peak-context contribution of one message: its input plus cache reads and writes."""
    return (
        as_count(usage.get("input_tokens"))
        + as_count(usage.get("cache_read_input_tokens"))
        + as_count(usage.get("cache_creation_input_tokens"))
    )


def result_usage(event: dict[str, Any], peak_context: Callable[[str | None], int]) -> SessionUsage:
    """The usage a ``result`` event reports, in total and per model; ``peak_context(model)`` fills what it lacks."""
    usage = as_dict(event.get("usage"))
    by_model: dict[str, TokenUsage] = {}
    for model, figures in as_dict(event.get("modelUsage")).items():
        figures_dict = as_dict(figures)
        by_model[encodable(str(model))] = TokenUsage(
            input_tokens=as_count(figures_dict.get("inputTokens")),
            output_tokens=as_count(figures_dict.get("outputTokens")),
            cache_read_tokens=as_count(figures_dict.get("cacheReadInputTokens")),
            cache_write_tokens=as_count(figures_dict.get("cacheCreationInputTokens")),
            peak_context=peak_context(str(model)),
            cost_usd=_float_or_none(figures_dict.get("costUSD")),
        )
    if len(by_model) == 1:
        (only,) = by_model
        by_model[only] = by_model[only].model_copy(update={"turns": as_count(event.get("num_turns"))})
    total = TokenUsage(
        input_tokens=as_count(usage.get("input_tokens")),
        output_tokens=as_count(usage.get("output_tokens")),
        cache_read_tokens=as_count(usage.get("cache_read_input_tokens")),
        cache_write_tokens=as_count(usage.get("cache_creation_input_tokens")),
        turns=as_count(event.get("num_turns")),
        peak_context=peak_context(None),
        cost_usd=_float_or_none(event.get("total_cost_usd")),
    )
    duration = event.get("duration_ms")
    return SessionUsage(
        total=total,
        by_model=by_model,
        source=UsageSource.RESULT_EVENT,
        duration_ms=as_count(duration) if duration is not None else None,
    )
