"""The suppression policy on a clock the test moves: every way a marker holds a verdict back, or stops.

Markers are real files written with ``write_marker`` and owned by this process; their age is set
with ``os.utime`` against the fake wall clock. Each test passes its own durations in its policy.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from tests.support.monitoring import live_session, policy_with

from expeditor.config import load_settings
from expeditor.monitor.markers import write_marker
from expeditor.monitor.suppression import Clock, SuppressionPolicy

pytestmark = pytest.mark.anyio


class FakeClock(Clock):
    """Wall and loop time that move together, only when the test says so."""

    def __init__(self) -> None:
        self.start_wall = time.time()
        self.elapsed = 0.0

    def wall(self) -> float:
        return self.start_wall + self.elapsed

    def loop(self) -> float:
        return self.elapsed

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds


def touch(path: Path, clock: FakeClock) -> None:
    """What the holder's heartbeat does, at the fake wall time."""
    os.utime(path, (clock.wall(), clock.wall()))


def hold(marker_dir: Path, clock: FakeClock, *, session_id: str = "abc", expires_in: float | None = None) -> Path:
    """A marker for ``session_id`` touched now, expiring ``expires_in`` from now when given."""
    expires_at = None if expires_in is None else clock.wall() + expires_in
    path = write_marker(marker_dir, "run-skill", session_id, expires_at=expires_at, started_at=clock.wall())
    touch(path, clock)
    return path


async def test_a_fresh_marker_suppresses_the_verdict(tmp_path: Path) -> None:
    clock, markers = FakeClock(), tmp_path / "markers"
    session = live_session(tmp_path, policy_with(marker_freshness=30, max_suppression_seconds=600), marker_dir=markers)
    path = hold(markers, clock)
    policy = SuppressionPolicy(session, clock=clock)
    clock.advance(20)
    decision = policy.decide(silence_started=0.0)
    assert decision.suppress
    assert decision.marker is not None
    assert decision.marker.path == path
    assert decision.note == f"suppressed by marker {path.name}"
    assert policy.vouched_at == clock.loop()


async def test_a_marker_not_touched_within_marker_freshness_does_not_suppress(tmp_path: Path) -> None:
    clock, markers = FakeClock(), tmp_path / "markers"
    session = live_session(tmp_path, policy_with(marker_freshness=30, max_suppression_seconds=600), marker_dir=markers)
    hold(markers, clock)
    policy = SuppressionPolicy(session, clock=clock)
    clock.advance(31)
    decision = policy.decide(silence_started=0.0)
    assert (decision.suppress, decision.marker, decision.note) == (False, None, "")
    assert policy.vouched_at == float("-inf")
    assert session.suppressed_by == {}


async def test_a_marker_whose_holder_stops_touching_it_stops_suppressing(tmp_path: Path) -> None:
    clock, markers = FakeClock(), tmp_path / "markers"
    session = live_session(tmp_path, policy_with(marker_freshness=30, max_suppression_seconds=600), marker_dir=markers)
    path = hold(markers, clock)
    policy = SuppressionPolicy(session, clock=clock)
    for _ in range(3):
        clock.advance(20)
        touch(path, clock)
        assert policy.decide(silence_started=0.0).suppress
    clock.advance(29)
    assert policy.decide(silence_started=0.0).suppress
    clock.advance(2)
    assert not policy.decide(silence_started=0.0).suppress


async def test_a_marker_of_another_session_does_not_suppress(tmp_path: Path) -> None:
    clock, markers = FakeClock(), tmp_path / "markers"
    session = live_session(tmp_path, policy_with(marker_freshness=30, max_suppression_seconds=600), marker_dir=markers)
    hold(markers, clock, session_id="abc-def")
    assert not SuppressionPolicy(session, clock=clock).decide(silence_started=0.0).suppress


async def test_a_marker_without_expires_at_suppresses_for_at_most_max_suppression_seconds(tmp_path: Path) -> None:
    clock, markers = FakeClock(), tmp_path / "markers"
    session = live_session(tmp_path, policy_with(marker_freshness=30, max_suppression_seconds=100), marker_dir=markers)
    path = hold(markers, clock)
    policy = SuppressionPolicy(session, clock=clock)
    assert policy.decide(silence_started=0.0).suppress
    for _ in range(4):
        clock.advance(24.5)
        touch(path, clock)
        assert policy.decide(silence_started=0.0).suppress
    clock.advance(3)
    touch(path, clock)
    decision = policy.decide(silence_started=0.0)
    assert not decision.suppress
    assert decision.marker is not None
    assert decision.marker.path == path
    assert decision.note == (
        f"marker {path.name} had suppressed this silence for 101.0s, the max_suppression_seconds bound (100s)"
    )
    assert session.suppressed_by == {path.name: pytest.approx(98)}


async def test_a_marker_with_expires_at_suppresses_past_max_suppression_seconds_until_it_expires(
    tmp_path: Path,
) -> None:
    clock, markers = FakeClock(), tmp_path / "markers"
    session = live_session(tmp_path, policy_with(marker_freshness=30, max_suppression_seconds=100), marker_dir=markers)
    path = hold(markers, clock, expires_in=250)
    policy = SuppressionPolicy(session, clock=clock)
    for _ in range(12):
        assert policy.decide(silence_started=0.0).suppress
        clock.advance(20)
        touch(path, clock)
    assert clock.elapsed == 240
    assert policy.decide(silence_started=0.0).suppress
    clock.advance(11)
    touch(path, clock)
    decision = policy.decide(silence_started=0.0)
    assert (decision.suppress, decision.marker, decision.note) == (False, None, "")


async def test_a_removed_marker_stops_suppressing_at_once(tmp_path: Path) -> None:
    clock, markers = FakeClock(), tmp_path / "markers"
    session = live_session(tmp_path, policy_with(marker_freshness=30, max_suppression_seconds=600), marker_dir=markers)
    path = hold(markers, clock)
    policy = SuppressionPolicy(session, clock=clock)
    assert policy.decide(silence_started=0.0).suppress
    clock.advance(5)
    path.unlink()
    decision = policy.decide(silence_started=0.0)
    assert (decision.suppress, decision.marker, decision.note) == (False, None, "")


async def test_a_gap_without_a_marker_restarts_the_max_suppression_budget(tmp_path: Path) -> None:
    clock, markers = FakeClock(), tmp_path / "markers"
    session = live_session(tmp_path, policy_with(marker_freshness=30, max_suppression_seconds=100), marker_dir=markers)
    first = hold(markers, clock)
    policy = SuppressionPolicy(session, clock=clock)
    assert policy.decide(silence_started=0.0).suppress
    clock.advance(90)
    touch(first, clock)
    assert policy.decide(silence_started=0.0).suppress
    first.unlink()
    assert not policy.decide(silence_started=0.0).suppress
    second = hold(markers, clock)
    assert policy.decide(silence_started=0.0).suppress
    clock.advance(90)
    touch(second, clock)
    assert policy.decide(silence_started=0.0).suppress
    clock.advance(11)
    touch(second, clock)
    assert not policy.decide(silence_started=0.0).suppress


async def test_a_new_silence_gets_a_fresh_max_suppression_budget(tmp_path: Path) -> None:
    clock, markers = FakeClock(), tmp_path / "markers"
    session = live_session(tmp_path, policy_with(marker_freshness=30, max_suppression_seconds=100), marker_dir=markers)
    path = hold(markers, clock)
    policy = SuppressionPolicy(session, clock=clock)
    assert policy.decide(silence_started=0.0).suppress
    for _ in range(4):
        clock.advance(24)
        touch(path, clock)
    assert policy.decide(silence_started=0.0).suppress
    # A signal moved at 96: the silence that starts there may be suppressed for the whole bound again.
    clock.advance(10)
    touch(path, clock)
    assert policy.decide(silence_started=96.0).suppress
    for _ in range(4):
        clock.advance(24)
        touch(path, clock)
    assert policy.decide(silence_started=96.0).suppress
    clock.advance(5)
    touch(path, clock)
    assert not policy.decide(silence_started=96.0).suppress


async def test_reset_gives_the_same_silence_a_fresh_max_suppression_budget(tmp_path: Path) -> None:
    clock, markers = FakeClock(), tmp_path / "markers"
    session = live_session(tmp_path, policy_with(marker_freshness=30, max_suppression_seconds=50), marker_dir=markers)
    path = hold(markers, clock)
    policy = SuppressionPolicy(session, clock=clock)
    assert policy.decide(silence_started=0.0).suppress
    clock.advance(25)
    touch(path, clock)
    assert policy.decide(silence_started=0.0).suppress
    clock.advance(26)
    touch(path, clock)
    assert not policy.decide(silence_started=0.0).suppress
    policy.reset()
    assert policy.decide(silence_started=0.0).suppress


async def test_suppressed_time_is_counted_per_marker_between_checks(tmp_path: Path) -> None:
    clock, markers = FakeClock(), tmp_path / "markers"
    session = live_session(tmp_path, policy_with(marker_freshness=30, max_suppression_seconds=600), marker_dir=markers)
    first = hold(markers, clock)
    policy = SuppressionPolicy(session, clock=clock)
    assert policy.decide(silence_started=0.0).suppress
    clock.advance(7)
    touch(first, clock)
    assert policy.decide(silence_started=0.0).suppress
    first.unlink()
    second = hold(markers, clock)
    clock.advance(3)
    touch(second, clock)
    assert policy.decide(silence_started=0.0).suppress
    assert session.suppressed_by == {first.name: pytest.approx(7), second.name: pytest.approx(3)}


async def test_with_markers_disabled_a_fresh_marker_does_not_suppress(tmp_path: Path) -> None:
    clock, markers = FakeClock(), tmp_path / "markers"
    policy_settings = policy_with(marker_freshness=30, max_suppression_seconds=600, markers_enabled=False)
    session = live_session(tmp_path, policy_settings, marker_dir=markers)
    hold(markers, clock)
    policy = SuppressionPolicy(session, clock=clock)
    decision = policy.decide(silence_started=0.0)
    assert (decision.suppress, decision.marker, decision.note) == (False, None, "")
    assert policy.vouched_at == float("-inf")
    assert session.suppressed_by == {}


async def test_without_a_marker_dir_nothing_suppresses(tmp_path: Path) -> None:
    clock = FakeClock()
    session = live_session(tmp_path, policy_with(marker_freshness=30, max_suppression_seconds=600), marker_dir=None)
    hold(tmp_path / "markers", clock)
    decision = SuppressionPolicy(session, clock=clock).decide(silence_started=0.0)
    assert (decision.suppress, decision.marker, decision.note) == (False, None, "")


async def test_expires_at_is_honoured_only_up_to_started_at_plus_the_longest_call(tmp_path: Path) -> None:
    clock, markers = FakeClock(), tmp_path / "markers"
    policy_settings = policy_with(marker_freshness=30, max_suppression_seconds=50, longest_call=100)
    session = live_session(tmp_path, policy_settings, marker_dir=markers)
    path = hold(markers, clock, expires_in=10_000)  # a holder that claims far more than any call may last
    policy = SuppressionPolicy(session, clock=clock)
    for _ in range(5):
        assert policy.decide(silence_started=0.0).suppress
        clock.advance(20)
        touch(path, clock)
    assert clock.elapsed == 100
    assert policy.decide(silence_started=0.0).suppress
    clock.advance(1)
    touch(path, clock)
    decision = policy.decide(silence_started=0.0)
    assert (decision.suppress, decision.marker, decision.note) == (False, None, "")


@pytest.mark.parametrize("run_timeout", [None, 1000], ids=["the-settings-timeout", "a-dispatch-s-timeout"])
async def test_a_dispatch_marker_protects_a_caller_past_timeout_while_dispatch_timeout_is_larger(
    tmp_path: Path, run_timeout: float | None
) -> None:
    settings = load_settings(home=tmp_path, timeout=100, dispatch_timeout=1000, kill_grace=3, marker_freshness=30)
    clock, markers = FakeClock(), tmp_path / "markers"
    session = live_session(tmp_path, settings.run_policy(timeout=run_timeout), marker_dir=markers)
    # What the server holds for a caller waiting on a dispatch: trusted until the dispatch's own deadline.
    path = hold(markers, clock, expires_in=settings.dispatch_timeout + settings.kill_grace)
    policy = SuppressionPolicy(session, clock=clock)
    while clock.elapsed < 1000:
        assert policy.decide(silence_started=0.0).suppress, clock.elapsed
        clock.advance(25)
        touch(path, clock)
    clock.advance(3)
    touch(path, clock)
    assert policy.decide(silence_started=0.0).suppress
    clock.advance(1)
    touch(path, clock)
    assert not policy.decide(silence_started=0.0).suppress
