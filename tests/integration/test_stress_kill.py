"""A shorter run of bench/stress_kill.py: random shapes killed at random moments leave nothing behind."""

from __future__ import annotations

import pytest
from bench.stress_kill import stress

pytestmark = pytest.mark.anyio


async def test_random_sessions_killed_at_random_moments_leave_no_survivor_marker_or_entry() -> None:
    figures = await stress(sessions=16, concurrency=8, seed=11)
    assert figures["processes"] > 16
    assert (figures["survivors"], figures["markers_left"], figures["registry_left"]) == (0, 0, 0)
