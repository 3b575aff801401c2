"""Numbers and durations as people paste them into pull requests: ``7.6k``, ``39.6M``, ``3h 20m``.

Rounding is done in integers, half up, so a figure never depends on how a float happens to
round (``1_250`` is ``1.3k``), and a unit is chosen *after* rounding, so ``999_950`` becomes
``1.0M`` rather than ``1000.0k``.
"""

from __future__ import annotations

import math

__all__ = ["format_count", "format_duration", "format_ratio"]

_UNITS = (("k", 10**3), ("M", 10**6), ("B", 10**9), ("T", 10**12))


def _divide_half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def format_count(value: int) -> str:
    """A non-negative count: ``999`` stays ``999``; from a thousand on, one decimal and a unit (``1.0k``, ``1.9M``)."""
    if value < 1000:
        return str(value)
    for suffix, size in _UNITS:
        tenths = _divide_half_up(value * 10, size)
        if tenths < 10_000 or size == _UNITS[-1][1]:
            return f"{tenths // 10}.{tenths % 10}{suffix}"
    raise AssertionError("unreachable: the largest unit always answers")


def format_ratio(value: float) -> str:
    """A non-negative ratio: one decimal below 10 (``0.4``, ``9.5``), else as :func:`format_count` (``96.4k``)."""
    tenths = _round_half_up(value * 10)
    if tenths < 100:
        return f"{tenths // 10}.{tenths % 10}"
    return format_count(_round_half_up(value))


def format_duration(seconds: float) -> str:
    """``0s``, ``45s``, ``15m 40s`` below an hour, ``3h 20m`` from an hour on (to the nearest minute)."""
    whole = _round_half_up(max(0.0, seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60}s"
    minutes = _divide_half_up(whole, 60)
    return f"{minutes // 60}h {minutes % 60}m"
