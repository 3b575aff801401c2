"""A shorter run of bench/stress_kill.py: random shapes killed at random moments leave nothing behind."""

from __future__ import annotations

import pytest
from bench.stress_kill import stress

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("containment", ["auto", "tree"])
async def test_random_sessions_killed_at_random_moments_leave_no_survivor_marker_or_entry(containment: str) -> None:
    # How many processes a random cancellation happens to catch alive depends on the machine's load (a bench
    # figure); every 4th session is cancelled only once all its children run, so whole trees are always killed.
    figures = await stress(sessions=32, concurrency=8, seed=11, containment=containment, settle_every=4)  # type: ignore[arg-type]
    assert figures["settled"] == figures["settled_expected"] == 8
    assert figures["processes"] >= 2 * figures["settled"]
    assert (figures["survivors"], figures["markers_left"], figures["registry_left"]) == (0, 0, 0)
    assert figures["groups_left"] == 0
