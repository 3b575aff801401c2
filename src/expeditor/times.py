"""Points in time as results show them: ISO 8601 in UTC, while Python and the store keep epoch seconds.

``Timestamp`` is a float in Python (what ``time.time()`` gives and the store's columns hold) that
serialises to JSON as ``2026-12-03T04:55:12.123Z``, the form a person or a model reads at a glance.
It accepts either form back, so a result written as JSON validates again. The store writes its
columns with ``STORAGE_CONTEXT``, which keeps the epoch number there.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, SerializationInfo, WithJsonSchema

__all__ = ["STORAGE_CONTEXT", "Timestamp", "iso_utc"]

STORAGE_CONTEXT: dict[str, Any] = {"epoch_times": True}
"""Pass as ``context=`` to ``model_dump(mode="json")`` where the epoch number must stay (storage)."""


def iso_utc(epoch_seconds: float) -> str:
    """``epoch_seconds`` as ISO 8601 in UTC to the millisecond, e.g. ``2026-12-03T04:55:12.123Z``."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _epoch_seconds(value: Any) -> Any:
    """An ISO 8601 string back to epoch seconds; anything else is left for the float validation."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value  # a number written as text, or garbage: the float validation judges it
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    return value


def _serialised(value: float, info: SerializationInfo) -> float | str:
    context: Any = info.context
    if not info.mode_is_json() or (isinstance(context, dict) and context.get("epoch_times")):
        return value
    return iso_utc(value)


Timestamp = Annotated[
    float,
    BeforeValidator(_epoch_seconds),
    PlainSerializer(_serialised),
    WithJsonSchema({"type": "string", "format": "date-time", "description": "ISO 8601, UTC."}),
]
