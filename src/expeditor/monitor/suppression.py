"""The suppression policy every silence watcher uses.

While a session is silent past its threshold, an active marker for *that session's own id*
suppresses the verdict: until the marker's ``expires_at`` when it has one, otherwise for at
most ``max_suppression_seconds`` of continuous suppression of that silence. Then the verdict
fires anyway, and says so. No marker is trusted past its ``started_at`` plus the run's
``longest_call``, nor with a time ahead of this host's clock, nor unless an expeditor process holds it
(see ``expeditor.monitor.markers``): bounds a marker cannot set for itself.

The policy and the silence watchers read the time through a ``Clock``: the system's clocks by
default, one a test advances by hand otherwise, so every branch can be driven without sleeping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio

from expeditor.executor.session import LiveSession
from expeditor.monitor.markers import ActiveMarker, find_active_marker

__all__ = ["SYSTEM_CLOCK", "Clock", "SuppressionDecision", "SuppressionPolicy"]


class Clock:
    """The time as the monitor reads it, and how it waits.

    ``wall`` is epoch seconds, the time of marker mtimes and ``expires_at``; ``loop`` is event-loop
    time, the time of the session's ``SignalClock``; ``sleep`` waits on the event loop. A test
    subclasses it to move time by hand.
    """

    def wall(self) -> float:
        return time.time()

    def loop(self) -> float:
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


SYSTEM_CLOCK = Clock()


@dataclass(frozen=True)
class SuppressionDecision:
    """Whether to hold the verdict back, and the sentence that explains it either way."""

    suppress: bool
    marker: ActiveMarker | None
    note: str


class SuppressionPolicy:
    """Tracks one silence of one session: when suppression began, and which markers held it."""

    def __init__(self, session: LiveSession, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._session = session
        self._clock = clock
        self._silence_started: float | None = None
        self._suppressing_since: float | None = None
        self._last_check: float | None = None
        self.vouched_at = float("-inf")

    def reset(self) -> None:
        """A signal moved: the next silence is a new one, with a fresh suppression budget."""
        self._silence_started = None
        self._suppressing_since = None
        self._last_check = None

    def decide(self, silence_started: float) -> SuppressionDecision:
        """Ask, for a silence that began at ``silence_started`` (event-loop time), whether to hold off."""
        session, policy = self._session, self._session.policy
        if silence_started != self._silence_started:
            self.reset()
            self._silence_started = silence_started
        if not policy.markers_enabled or session.marker_dir is None:
            return SuppressionDecision(False, None, "")
        now = self._clock.wall()
        marker = find_active_marker(
            session.marker_dir,
            session.session_id,
            freshness=policy.marker_freshness,
            longest_call=policy.longest_call,
            now=now,
        )
        if marker is None:
            self._suppressing_since = None
            self._last_check = None
            return SuppressionDecision(False, None, "")
        if self._suppressing_since is None:
            self._suppressing_since = now
        if marker.expires_at is None:
            limit = self._suppressing_since + policy.max_suppression_seconds
            if now >= limit:
                return SuppressionDecision(
                    False,
                    marker,
                    f"marker {marker.name} had suppressed this silence for "
                    f"{now - self._suppressing_since:.1f}s, the max_suppression_seconds bound "
                    f"({policy.max_suppression_seconds:g}s)",
                )
        # Markers with expires_at are trusted until then (capped at started_at + longest_call): past it they
        # are never found active.
        self._account(marker, now)
        self.vouched_at = self._clock.loop()
        return SuppressionDecision(True, marker, f"suppressed by marker {marker.name}")

    def _account(self, marker: ActiveMarker, now: float) -> None:
        elapsed = 0.0 if self._last_check is None else now - self._last_check
        self._last_check = now
        held = self._session.suppressed_by
        held[marker.name] = held.get(marker.name, 0.0) + elapsed
