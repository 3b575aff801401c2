"""The silence watchers on a clock that moves only when they sleep: every way a verdict comes, or waits.

The fake clock jumps to the end of each sleep, running on the way what the test planned (a marker's
heartbeat, its removal, a signal moving), so a watch that would take minutes returns at once and says
when, on the fake clock, it ended. Markers are real files written with ``write_marker`` and owned by
this process. Each test passes its own durations in its policy.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from tests.support.monitoring import live_session as this_process_session
from tests.support.monitoring import policy_with

from expeditor.config import RunPolicy
from expeditor.executor.models import DecidedBy, Signal, Termination
from expeditor.executor.session import LiveSession, Verdict
from expeditor.monitor.markers import write_marker
from expeditor.monitor.suppression import Clock
from expeditor.monitor.watchers import SilenceWatcher, StdoutWatcher, TranscriptWatcher

pytestmark = pytest.mark.anyio


class FakeClock(Clock):
    """Time that moves only when a watcher sleeps, running planned actions at their moment on the way.

    It runs ``behind`` seconds behind the system's clocks, keeping their offset between wall and loop
    time: ``SignalClock.moved(at_wall=...)`` maps a wall time onto the loop with that offset (and takes
    a future time as now), so a movement dated by this clock's wall lands at this clock's loop time.
    """

    def __init__(self, *, behind: float) -> None:
        loop, wall = anyio.current_time(), time.time()
        self.offset = wall - loop
        self.start = loop - behind
        self.now = self.start
        self._plan: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def loop(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self.offset

    @property
    def elapsed(self) -> float:
        return self.now - self.start

    def at(self, elapsed: float, action: Callable[[], None]) -> None:
        """Run ``action`` when ``elapsed`` seconds have passed since the clock was made."""
        heapq.heappush(self._plan, (self.start + elapsed, next(self._order), action))

    async def sleep(self, seconds: float) -> None:
        until = self.now + seconds
        while self._plan and self._plan[0][0] <= until:
            when, _, action = heapq.heappop(self._plan)
            self.now = max(self.now, when)
            action()
        self.now = until
        await anyio.lowlevel.checkpoint()


def run_policy(*, threshold: float, **durations: Any) -> RunPolicy:
    """A policy whose transcript and stdout thresholds are both ``threshold``."""
    return policy_with(stale_threshold=threshold, idle_timeout=threshold, **durations)


def live_session(tmp_path: Path, policy: RunPolicy, clock: FakeClock, *, marker_dir: Path | None) -> LiveSession:
    """A session of this process whose every signal moved at the clock's start."""
    session = this_process_session(tmp_path, policy, marker_dir=marker_dir)
    for signal in Signal:
        move(session, clock, signal)
    return session


def move(session: LiveSession, clock: FakeClock, signal: Signal) -> None:
    session.clock.moved(signal, at_wall=clock.wall())


def hold(marker_dir: Path, clock: FakeClock, *, heartbeat: float, beats: int, expires_in: float | None = None) -> Path:
    """A marker for the session, touched now and then ``beats`` times every ``heartbeat`` seconds."""
    expires_at = None if expires_in is None else clock.wall() + expires_in
    # Started at the fake wall time: a started_at ahead of the reader's clock would read as forged.
    path = write_marker(marker_dir, "run-skill", "abc", expires_at=expires_at, started_at=clock.wall())

    def touch() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.utime(path, (clock.wall(), clock.wall()))

    touch()
    for beat in range(1, beats + 1):
        clock.at(clock.elapsed + beat * heartbeat, touch)
    return path


async def watch(watcher: SilenceWatcher, session: LiveSession) -> Verdict:
    with anyio.fail_after(5):
        return await watcher.watch(session)


async def test_a_silent_session_without_a_marker_goes_stale_after_its_threshold(tmp_path: Path) -> None:
    clock = FakeClock(behind=10_000)
    policy = run_policy(threshold=100, poll_interval=1, marker_freshness=25.5, max_suppression_seconds=200)
    session = live_session(tmp_path, policy, clock, marker_dir=tmp_path / "markers")
    verdict = await watch(TranscriptWatcher(clock=clock), session)
    assert (verdict.termination, verdict.decided_by) == (Termination.STALE, DecidedBy.TRANSCRIPT)
    assert clock.elapsed == pytest.approx(100, abs=1e-3)
    assert verdict.reason == (
        "no transcript, stdout or child-process activity for 100.0s (its stale_threshold is 100s); "
        "no active execution marker vouched for it"
    )
    assert session.suppressed_by == {}


async def test_a_silent_session_without_a_marker_stalls_on_stdout_after_its_idle_timeout(tmp_path: Path) -> None:
    clock = FakeClock(behind=10_000)
    policy = run_policy(threshold=100, poll_interval=1, marker_freshness=25.5, max_suppression_seconds=200)
    session = live_session(tmp_path, policy, clock, marker_dir=tmp_path / "markers")
    verdict = await watch(StdoutWatcher(clock=clock), session)
    assert (verdict.termination, verdict.decided_by) == (Termination.IDLE_STALL, DecidedBy.STDOUT)
    assert clock.elapsed == pytest.approx(100, abs=1e-3)
    assert verdict.reason.startswith("no transcript, stdout or child-process activity for 100.0s (its idle_timeout")


async def test_movement_of_any_signal_pushes_the_verdict_a_threshold_later(tmp_path: Path) -> None:
    clock = FakeClock(behind=10_000)
    policy = run_policy(threshold=100, poll_interval=1, marker_freshness=25.5, max_suppression_seconds=200)
    session = live_session(tmp_path, policy, clock, marker_dir=tmp_path / "markers")
    clock.at(60.5, lambda: move(session, clock, Signal.CHILDREN))
    verdict = await watch(TranscriptWatcher(clock=clock), session)
    assert verdict.termination is Termination.STALE
    assert clock.elapsed == pytest.approx(160.5, abs=1e-3)


async def test_a_fresh_marker_holds_the_verdict_for_max_suppression_seconds_then_lets_it_fire(
    tmp_path: Path,
) -> None:
    clock, markers = FakeClock(behind=10_000), tmp_path / "markers"
    policy = run_policy(threshold=100, poll_interval=1, marker_freshness=25.5, max_suppression_seconds=199.5)
    session = live_session(tmp_path, policy, clock, marker_dir=markers)
    path = hold(markers, clock, heartbeat=10, beats=100)
    verdict = await watch(TranscriptWatcher(clock=clock), session)
    assert verdict.termination is Termination.STALE
    assert clock.elapsed == pytest.approx(300, abs=1e-3)
    assert verdict.reason == (
        "no transcript, stdout or child-process activity for 300.0s (its stale_threshold is 100s); "
        f"marker {path.name} had suppressed this silence for 200.0s, the max_suppression_seconds bound (199.5s)"
    )
    assert session.suppressed_by == {path.name: pytest.approx(199, abs=1e-3)}


async def test_a_marker_with_expires_at_holds_the_verdict_past_max_suppression_seconds_until_it_expires(
    tmp_path: Path,
) -> None:
    clock, markers = FakeClock(behind=10_000), tmp_path / "markers"
    policy = run_policy(threshold=100, poll_interval=1, marker_freshness=25.5, max_suppression_seconds=200)
    session = live_session(tmp_path, policy, clock, marker_dir=markers)
    hold(markers, clock, heartbeat=10, beats=100, expires_in=450.5)
    verdict = await watch(TranscriptWatcher(clock=clock), session)
    # Vouched for the last time at 450; the session then gets one more threshold to show movement.
    assert verdict.termination is Termination.STALE
    assert clock.elapsed == pytest.approx(550, abs=1e-3)
    assert verdict.reason == (
        "no transcript, stdout or child-process activity for 550.0s (its stale_threshold is 100s); "
        "its execution marker stopped vouching for it 100.0s ago"
    )


async def test_a_marker_its_holder_stops_touching_stops_holding_the_verdict(tmp_path: Path) -> None:
    clock, markers = FakeClock(behind=10_000), tmp_path / "markers"
    policy = run_policy(threshold=100, poll_interval=1, marker_freshness=25.5, max_suppression_seconds=500)
    session = live_session(tmp_path, policy, clock, marker_dir=markers)
    hold(markers, clock, heartbeat=10, beats=15)
    verdict = await watch(TranscriptWatcher(clock=clock), session)
    # Last touched at 150, fresh until 175.5: the last vouch is at 175, the verdict a threshold later.
    assert clock.elapsed == pytest.approx(275, abs=1e-3)
    assert verdict.reason.endswith("; its execution marker stopped vouching for it 100.0s ago")


async def test_a_marker_stale_from_the_start_holds_nothing(tmp_path: Path) -> None:
    clock, markers = FakeClock(behind=10_000), tmp_path / "markers"
    policy = run_policy(threshold=100, poll_interval=1, marker_freshness=25.5, max_suppression_seconds=500)
    session = live_session(tmp_path, policy, clock, marker_dir=markers)
    hold(markers, clock, heartbeat=10, beats=0)
    verdict = await watch(TranscriptWatcher(clock=clock), session)
    assert clock.elapsed == pytest.approx(100, abs=1e-3)
    assert verdict.reason.endswith("; no active execution marker vouched for it")
    assert session.suppressed_by == {}


async def test_a_marker_removed_mid_suppression_gives_the_session_one_more_threshold(tmp_path: Path) -> None:
    clock, markers = FakeClock(behind=10_000), tmp_path / "markers"
    policy = run_policy(threshold=100, poll_interval=1, marker_freshness=25.5, max_suppression_seconds=500)
    session = live_session(tmp_path, policy, clock, marker_dir=markers)
    path = hold(markers, clock, heartbeat=10, beats=100)
    clock.at(250.5, path.unlink)
    verdict = await watch(TranscriptWatcher(clock=clock), session)
    assert clock.elapsed == pytest.approx(350, abs=1e-3)
    assert verdict.reason == (
        "no transcript, stdout or child-process activity for 350.0s (its stale_threshold is 100s); "
        "its execution marker stopped vouching for it 100.0s ago"
    )
    assert session.suppressed_by == {path.name: pytest.approx(150, abs=1e-3)}


async def test_movement_during_suppression_ends_that_silence_and_resets_the_budget(tmp_path: Path) -> None:
    clock, markers = FakeClock(behind=10_000), tmp_path / "markers"
    policy = run_policy(threshold=100, poll_interval=1, marker_freshness=25.5, max_suppression_seconds=199.5)
    session = live_session(tmp_path, policy, clock, marker_dir=markers)
    hold(markers, clock, heartbeat=10, beats=100)
    clock.at(250.5, lambda: move(session, clock, Signal.STDOUT))
    verdict = await watch(TranscriptWatcher(clock=clock), session)
    # Without the reset the bound would fire at 300; the new silence is first judged at 350.5.
    assert clock.elapsed == pytest.approx(550.5, abs=1e-3)
    assert verdict.reason.startswith(
        "no transcript, stdout or child-process activity for 300.0s (its stale_threshold is 100s); marker "
    )
    assert verdict.reason.endswith("had suppressed this silence for 200.0s, the max_suppression_seconds bound (199.5s)")


async def test_with_markers_disabled_a_fresh_marker_holds_nothing(tmp_path: Path) -> None:
    clock, markers = FakeClock(behind=10_000), tmp_path / "markers"
    policy = run_policy(
        threshold=100, poll_interval=1, marker_freshness=25.5, max_suppression_seconds=200, markers_enabled=False
    )
    session = live_session(tmp_path, policy, clock, marker_dir=markers)
    hold(markers, clock, heartbeat=10, beats=100)
    verdict = await watch(TranscriptWatcher(clock=clock), session)
    assert clock.elapsed == pytest.approx(100, abs=1e-3)
    assert verdict.reason == "no transcript, stdout or child-process activity for 100.0s (its stale_threshold is 100s)"
    assert session.suppressed_by == {}


async def test_without_a_marker_dir_nothing_holds_the_verdict(tmp_path: Path) -> None:
    clock = FakeClock(behind=10_000)
    policy = run_policy(threshold=100, poll_interval=1, marker_freshness=25.5, max_suppression_seconds=200)
    session = live_session(tmp_path, policy, clock, marker_dir=None)
    hold(tmp_path / "markers", clock, heartbeat=10, beats=100)
    verdict = await watch(StdoutWatcher(clock=clock), session)
    assert clock.elapsed == pytest.approx(100, abs=1e-3)
    assert verdict.reason == "no transcript, stdout or child-process activity for 100.0s (its idle_timeout is 100s)"
