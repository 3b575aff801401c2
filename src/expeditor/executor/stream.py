"""What a session's ``--output-format stream-json`` says while it streams, event by event.

The lines themselves are split and decoded by ``expeditor.usage.stream_json`` (they are untrusted
bytes, and none of them may raise). The session's facts come from the ``result`` event;
``assistant`` events are used only for peak context and the last text. Every string kept here is
made encodable (``_kept_text``), so whatever a session printed, its facts serialise and store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from expeditor.usage.models import SessionUsage
from expeditor.usage.stream_json import as_dict, context_size, encodable, result_usage

__all__ = ["ResultFacts", "StreamState"]


def _kept_text(value: Any) -> str | None:
    """``value`` made encodable if it is a string, else None."""
    return encodable(value) if isinstance(value, str) else None


def _kept_json(value: Any) -> Any:
    """Decoded JSON with every string in it (keys too) made encodable: an escape can make a lone surrogate."""
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, list):
        return [_kept_json(item) for item in value]  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, dict):
        return {encodable(str(key)): _kept_json(item) for key, item in value.items()}  # pyright: ignore[reportUnknownVariableType]
    return value


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
    structured_output: dict[str, Any] | None = None
    """The object answered through ``--json-schema`` (Claude Code's StructuredOutput tool), if any."""


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
            self.init_session_id = _kept_text(event.get("session_id"))
            self.model = _kept_text(event.get("model"))
        elif kind == "assistant":
            self._assistant(as_dict(event.get("message")))
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
            size = context_size(as_dict(message.get("usage")))
            _, previous = self._contexts.get(message_id, ("", 0))
            self._contexts[message_id] = (_kept_text(message.get("model")) or "", max(previous, size))
        content = message.get("content")
        if isinstance(content, list):
            for block in content:  # pyright: ignore[reportUnknownVariableType]
                block_dict = as_dict(block)
                if block_dict.get("type") == "text" and (text := _kept_text(block_dict.get("text"))) is not None:
                    self.last_assistant_text = text

    def _result(self, event: dict[str, Any]) -> ResultFacts:
        errors = event.get("errors")
        denials = event.get("permission_denials")
        structured = event.get("structured_output")
        return ResultFacts(
            errors=tuple(encodable(e) for e in errors if isinstance(e, str)) if isinstance(errors, list) else (),  # pyright: ignore[reportUnknownVariableType]
            permission_denials=tuple(
                encodable(str(as_dict(d).get("tool_name")))
                for d in denials
                if as_dict(d).get("tool_name")  # pyright: ignore[reportUnknownVariableType]
            )
            if isinstance(denials, list)
            else (),
            session_id=_kept_text(event.get("session_id")),
            text=_kept_text(event.get("result")) or "",
            is_error=event.get("is_error") is True,
            subtype=_kept_text(event.get("subtype")) or "",
            usage=result_usage(event, self.peak_context),
            structured_output=_kept_json(structured) if isinstance(structured, dict) else None,
        )
