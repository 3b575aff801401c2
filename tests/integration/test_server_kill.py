"""A shorter run of bench/server_kill.py: servers SIGKILLed at random instants while launching leave nothing."""

from __future__ import annotations

import pytest
from bench.server_kill import server_kill

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("containment", ["auto", "tree"])
async def test_servers_killed_at_random_instants_leave_no_session_group_marker_or_entry(containment: str) -> None:
    figures = await server_kill(servers=4, sessions_each=6, seed=3, containment=containment)
    assert (figures["survivors"], figures["groups_left"], figures["markers_left"], figures["registry_left"]) == (
        0,
        0,
        0,
        0,
    )
