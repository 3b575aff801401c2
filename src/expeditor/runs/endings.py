"""An end that must land: a run's or a job's end reaches the store whatever fails on the way.

The store may be gone (deleted, or moved aside as corrupt and started afresh), busy, full, or refuse a
text it cannot encode. Whatever happened, a claimed record must not stay ``running``: the end is first
written as a transition (``mark``); while the store is unavailable that is tried again, a bounded
number of times; when the record is gone or cannot take the end as it is, the whole ended record, its
text made encodable, is written again (``restore``), which recreates it in a recreated store. Only a
store that cannot be written at all, or a record another claimer took over (``StaleAttempt``), leaves
the end unrecorded, and the caller is told so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from expeditor.errors import StaleAttempt, StoreUnavailable
from expeditor.usage.stream_json import encodable

__all__ = ["EndRetry", "encodable_copy", "land_end"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class EndRetry:
    """How hard an end is pressed on a store that is unavailable: ``tries`` writes, ``delay`` seconds apart.

    The bound keeps a shutdown short: each try also waits at most the store's busy timeout.
    """

    tries: int = 3
    delay: float = 0.2

    def __post_init__(self) -> None:
        if self.tries < 1 or self.delay < 0:
            raise ValueError(f"an end is written at least once, with a delay of 0 s or more: got {self}")


def land_end(doing: str, mark: Callable[[], T], restore: Callable[[], T], retry: EndRetry) -> tuple[T, bool]:
    """Write an end: ``mark`` it, else ``restore`` the whole record; returns what was written and whether
    it was restored.

    A store that is unavailable is tried again (``retry``); a record that is gone, cannot make the move, or
    refuses the end's text is restored at once. ``StaleAttempt`` is never retried: the record is another
    claimer's. What the last try raised is raised.
    """
    failure: Exception | None = None
    for attempt in range(retry.tries):
        if attempt:
            time.sleep(retry.delay)
        try:
            return mark(), False
        except StaleAttempt:
            raise
        except StoreUnavailable as exc:
            failure = exc
            if attempt + 1 < retry.tries:
                logger.warning("%s failed, trying again: %s", doing, exc)
                continue
        except Exception as exc:  # the record is gone, cannot make this move, or cannot take this text
            failure = exc
        logger.warning(
            "%s: the end could not be written as a transition (%s); writing the whole record", doing, failure
        )
        try:
            return restore(), True
        except StaleAttempt:
            raise
        except StoreUnavailable as exc:
            failure = exc
    assert failure is not None, "every try ends in a return or a failure"
    raise failure


def encodable_copy(model: M) -> M:
    """``model`` with every string in it (keys included) made encodable as UTF-8."""
    return type(model).model_validate(_encodable(model.model_dump()))


def _encodable(value: Any) -> Any:
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, dict):
        return {_encodable(key): _encodable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable(item) for item in value]
    return value
