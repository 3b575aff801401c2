"""A shorter run of bench/stress_kill.py: random shapes killed at random moments leave nothing behind."""

from __future__ import annotations

import pytest
from bench.stress_kill import stress

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("containment", ["auto", "tree"])
async def test_random_sessions_killed_at_random_moments_leave_no_survivor_marker_or_entry(containment: str) -> None:
    # 48 sessions, so that enough of them start their children before their random cancellation however
    # slow the launches are (a cgroup's migration costs ~16 ms each; 24 sessions gave 16 to 30 processes):
    # the count says the run did something, it is a figure, not a verdict.
    figures = await stress(sessions=48, concurrency=8, seed=11, containment=containment)  # type: ignore[arg-type]
    assert figures["processes"] > 16
    assert (figures["survivors"], figures["markers_left"], figures["registry_left"]) == (0, 0, 0)
    assert figures["groups_left"] == 0
