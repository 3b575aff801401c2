"""Figures as people read them: the unit is chosen after rounding, halves round up, times stay short."""

from __future__ import annotations

import pytest

from expeditor.reports.humanize import format_count, format_duration, format_ratio


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0"),
        (999, "999"),
        (1000, "1.0k"),
        (1049, "1.0k"),
        (1050, "1.1k"),  # half up, not to even
        (1250, "1.3k"),
        (7_600, "7.6k"),
        (99_949, "99.9k"),
        (99_950, "100.0k"),
        (999_949, "999.9k"),
        (999_950, "1.0M"),  # not 1000.0k
        (1_900_000, "1.9M"),
        (39_640_000, "39.6M"),
        (999_950_000, "1.0B"),
        (2_500_000_000_000, "2.5T"),
        (10**16, "10000.0T"),  # the largest unit takes whatever is left
    ],
)
def test_counts_get_one_decimal_and_a_unit_from_a_thousand_on(value: int, expected: str) -> None:
    assert format_count(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0, "0.0"), (0.04, "0.0"), (0.05, "0.1"), (0.4, "0.4"), (9.94, "9.9"), (9.95, "10"), (18.49, "18")],
)
def test_ratios_keep_a_decimal_below_ten_so_small_ones_do_not_read_as_zero(value: float, expected: str) -> None:
    assert format_ratio(value) == expected


def test_large_ratios_read_like_counts() -> None:
    assert format_ratio(999.5) == "1.0k"
    assert format_ratio(96_400.84) == "96.4k"


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (0.49, "0s"),
        (0.5, "1s"),
        (-3, "0s"),  # a clock that stepped back never makes a negative time
        (45, "45s"),
        (59.4, "59s"),
        (59.5, "1m 0s"),
        (940, "15m 40s"),
        (3599.4, "59m 59s"),
        (3599.5, "1h 0m"),
        (12_000, "3h 20m"),
        (12_029, "3h 20m"),
        (12_030, "3h 21m"),  # half a minute rounds up
        (90_000, "25h 0m"),
    ],
)
def test_durations_are_seconds_then_minutes_and_seconds_then_hours_and_minutes(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected
