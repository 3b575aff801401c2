"""A worker's self-fence: cut off at the budget after the last renewal sent, restored when one gets through.

The clock is the test's (a list it moves), so each case states the times it means; the cut-off and restore
callbacks are recorders. ``run()`` itself is exercised with real time by the worker tests.
"""

from __future__ import annotations

import pytest

pytest.importorskip("procrastinate")

from expeditor.errors import InvalidInput
from expeditor.queue.fencing import SelfFence, fence_budget

pytestmark = pytest.mark.anyio


class Calls:
    def __init__(self) -> None:
        self.cut: list[str] = []
        self.restored = 0

    async def cut_off(self, reason: str) -> None:
        self.cut.append(reason)

    async def back(self) -> None:
        self.restored += 1


def fence(now: list[float], renewed: list[float | None], calls: Calls, *, interval: float, ttl: float) -> SelfFence:
    return SelfFence(
        last_renewal=lambda: renewed[0],
        lease_interval=interval,
        lease_ttl=ttl,
        cut_off=calls.cut_off,
        restored=calls.back,
        worker="worker on host-a",
        clock=lambda: now[0],
    )


def test_the_budget_keeps_two_renewal_intervals_on_its_shorter_side() -> None:
    assert fence_budget(10, 30) == 20  # the defaults: one lost renewal never cuts, 10 s left for the kill
    assert fence_budget(0.5, 1.5) == 1.0
    assert fence_budget(1, 10) == 8  # a long lease: two intervals for the kill
    assert fence_budget(0.5, 2) == 1.0


def test_a_lease_too_short_for_the_kill_to_come_first_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"lease_ttl \(1 s\) must be at least three times lease_interval"):
        fence_budget(0.5, 1)


async def test_a_worker_is_cut_off_once_at_the_budget_and_restored_by_a_later_renewal() -> None:
    now, renewed, calls = [100.0], list[float | None]([100.0]), Calls()
    guard = fence(now, renewed, calls, interval=0.5, ttl=1.5)

    now[0] = 100.99
    await guard.check()
    assert calls.cut == []
    assert not guard.is_cut_off

    now[0] = 101.0
    await guard.check()
    now[0] = 101.4
    await guard.check()
    assert len(calls.cut) == 1
    assert guard.is_cut_off
    assert guard.cuts == 1
    assert "worker on host-a was cut off from the store" in calls.cut[0]
    assert "last renewed 1.0 s ago" in calls.cut[0]
    assert "1.5 s after that" in calls.cut[0]

    renewed[0] = 101.3  # a renewal sent at 101.3 got through
    await guard.check()
    assert calls.restored == 1
    assert not guard.is_cut_off
    await guard.check()
    assert calls.restored == 1


async def test_an_answer_that_comes_late_does_not_move_the_deadline() -> None:
    # The lease's age counts from when the renewal was sent: one sent at 100 and answered at 100.9 leaves
    # the deadline at 101, not 101.9.
    now, renewed, calls = [100.9], list[float | None]([100.0]), Calls()
    guard = fence(now, renewed, calls, interval=0.5, ttl=1.5)
    now[0] = 101.0
    await guard.check()
    assert guard.is_cut_off


async def test_before_any_renewal_the_fence_counts_from_when_it_began_watching() -> None:
    now, renewed, calls = [50.0], list[float | None]([None]), Calls()
    guard = fence(now, renewed, calls, interval=0.5, ttl=1.5)
    now[0] = 50.5
    assert guard.silence() == pytest.approx(0.5)
    await guard.check()
    assert not guard.is_cut_off
    now[0] = 51.0
    await guard.check()
    assert guard.is_cut_off
