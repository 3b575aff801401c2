"""The usage a Claude Code transcript records (where it lives: ``expeditor.claude_paths``).

The transcript writes one ``assistant`` line per content block, repeating the message id with
the message's final usage, so deduplicating by ``message.id`` gives true figures for a session
that died before its ``result`` event.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from expeditor.usage.models import SessionUsage, TokenUsage, UsageSource
from expeditor.usage.stream_json import LineSplitter, context_size, decode_event, encodable

__all__ = ["TranscriptTally", "usage_from_transcript"]

_CHUNK = 1 << 20
# The model Claude Code names on replies it makes up itself (an API error, an aborted request):
# they carry no tokens and are not turns.
_SYNTHETIC_MODEL = "<synthetic>"


def _usage_figures(usage: dict[str, Any]) -> tuple[int, int, int, int]:
    def number(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    return (
        number("input_tokens"),
        number("output_tokens"),
        number("cache_read_input_tokens"),
        number("cache_creation_input_tokens"),
    )


def usage_from_transcript(path: Path, start_offset: int = 0) -> SessionUsage:
    """Usage of the messages written after ``start_offset``, each message counted once.

    Figures before the offset belong to an earlier run of a resumed session. A missing or
    unreadable file gives empty usage, never an error.
    """
    return TranscriptTally(path, start_offset).read(complete=True)


class TranscriptTally:
    """The usage of a transcript that is still being written, read as it grows.

    Each ``read`` reads only what was appended since the last one, so following a long session's
    file costs its growth, not its size, however often it is asked.
    """

    def __init__(self, path: Path, start_offset: int = 0) -> None:
        self.path = path
        self._position = start_offset
        self._splitter = LineSplitter()
        self._messages: dict[str, tuple[str, tuple[int, int, int, int], int]] = {}

    def read(self, *, complete: bool = False) -> SessionUsage:
        """The usage of every message written so far (``partial``: from a transcript), after reading the growth.

        ``complete``: the file is finished, so a last line without its newline counts too; while it is
        being written such a line is only half there and waits for the next read. A missing or
        unreadable file adds nothing, never an error.
        """
        try:
            with self.path.open("rb") as stream:
                stream.seek(self._position)
                while chunk := stream.read(_CHUNK):
                    self._position += len(chunk)
                    for line in self._splitter.feed(chunk):
                        _collect(line, self._messages)
        except OSError:
            pass
        if complete:
            for line in self._splitter.flush():
                _collect(line, self._messages)
        return _usage_of(self._messages)


def _usage_of(messages: dict[str, tuple[str, tuple[int, int, int, int], int]]) -> SessionUsage:
    if not messages:
        return SessionUsage()
    # Summed as plain integers, one model built per model: a long session has tens of thousands of messages.
    sums: dict[str, list[int]] = {}
    for model, figures, context in messages.values():
        tally = sums.setdefault(model, [0, 0, 0, 0, 0, 0])
        for index, value in enumerate(figures):
            tally[index] += value
        tally[4] += 1
        tally[5] = max(tally[5], context)
    by_model = {
        model: TokenUsage(
            input_tokens=inp,
            output_tokens=out,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            turns=turns,
            peak_context=peak,
        )
        for model, (inp, out, cache_read, cache_write, turns, peak) in sums.items()
    }
    total = TokenUsage()
    for usage in by_model.values():
        total = total + usage
    return SessionUsage(total=total, by_model=by_model, source=UsageSource.TRANSCRIPT, partial=True)


def _collect(line: bytes, messages: dict[str, tuple[str, tuple[int, int, int, int], int]]) -> None:
    event = decode_event(line)
    if event is None or event.get("type") != "assistant":
        return
    message = event.get("message")
    if not isinstance(message, dict):
        return
    message_id = message.get("id")  # pyright: ignore[reportUnknownVariableType]
    usage = message.get("usage")  # pyright: ignore[reportUnknownVariableType]
    if not isinstance(message_id, str) or not isinstance(usage, dict):
        return
    model = message.get("model")  # pyright: ignore[reportUnknownVariableType]
    if model == _SYNTHETIC_MODEL:
        return
    figures = _usage_figures(usage)  # pyright: ignore[reportUnknownArgumentType]
    # The last line of a message carries its final usage; keep the largest output seen.
    previous = messages.get(message_id)
    if previous is None or figures[1] >= previous[1][1]:
        messages[message_id] = (
            encodable(model) if isinstance(model, str) else "unknown",
            figures,
            context_size(usage),  # pyright: ignore[reportUnknownArgumentType]
        )
