"""Self-fencing: a worker cut off from the store kills its own sessions before another host may take them over.

A worker proves it is alive by renewing its owner lease (``state.pg_leases``); a job it runs is taken over by
another host only through the claim, which interrupts a running record only once its owner's lease has
expired. A worker that cannot reach the database cannot know whether that has happened, so it acts first:
``SelfFence`` watches the time since the last renewal the database took and, when it reaches the *budget*,
calls the worker's ``cut_off(reason)`` (kill every live session, fetch no job); when a renewal gets through
again it calls ``restored()``.

Why the kill comes first (the safety argument):

1. Another host interrupts a running record only in the claim's transaction, and only when the owner's
   lease has expired *by the database's clock*: ``lease_expires_at = now() + lease_ttl`` was written by the
   last renewal the database committed, at database time ``T``, so no takeover happens before ``T +
   lease_ttl``. One clock (the database's) both sets and reads the expiry, so hosts' clocks never meet.
2. That renewal was sent before the database ran it: if it was sent at ``S``, then ``T >= S`` in real time.
   No host can therefore take the worker's jobs before ``S + lease_ttl``.
3. The worker counts from ``S`` on its own monotonic clock: from when the last successful renewal was
   *sent*, not from when its answer came (``Leases.last_renewal``). A refused connection, a hung one (a
   network that swallows packets without closing anything) and a slow answer all leave ``S`` where it
   was; a slow answer cannot stretch the deadline. A renewal committed whose answer never arrived only
   makes the real ``T`` later than the worker believes: the safe side.
4. At ``S + budget`` it kills its sessions; ``budget = max(lease_ttl - 2 × lease_interval, 2 ×
   lease_interval)``. The kill thus has ``margin = lease_ttl - budget`` (at least one renewal interval,
   two when the lease is long enough) to end every session before ``S + lease_ttl``: the fence wakes at
   the deadline itself (no polling period to add), the kill is the server's shutdown path (about 100 ms
   plus the bounded teardown), and two monotonic clocks drift by parts per million over one lease. The
   budget itself is at least two renewal intervals, so one lost renewal never kills anything: a lease
   renewed every ``lease_interval`` is at most one interval old when healthy.
5. After the cut the worker fetches no job and keeps renewing. Whatever it writes later for an attempt
   another host took over carries that attempt's number; the record is at a newer attempt, so the store's
   fence refuses it (``StaleAttempt``). A write for an attempt nobody took over is still that attempt's to
   make: its record never moved.

The argument needs ``lease_ttl >= 3 × lease_interval`` (then ``margin >= lease_interval``); a worker with
less is refused at start. It assumes the database's wall clock does not jump forward by a large step
while a lease runs (a stepped clock shortens every lease alike; run NTP in slew mode on the database host).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio

from expeditor.errors import InvalidInput

__all__ = ["SelfFence", "fence_budget"]

logger = logging.getLogger(__name__)

CutOff = Callable[[str], Awaitable[None]]
Restored = Callable[[], Awaitable[None]]


def fence_budget(lease_interval: float, lease_ttl: float) -> float:
    """Seconds without a renewal after which a worker kills its sessions (see the module's argument);
    InvalidInput when the lease is too short for the kill to come first."""
    if lease_ttl < 3 * lease_interval:
        raise InvalidInput(
            f"lease_ttl ({lease_ttl:g} s) must be at least three times lease_interval ({lease_interval:g} s) "
            "for a worker: it kills its sessions no sooner than two renewal intervals after its last renewal "
            "(so one lost renewal kills nothing), and the kill needs one more before other hosts may take its "
            "jobs over"
        )
    return max(lease_ttl - 2 * lease_interval, 2 * lease_interval)


class SelfFence:
    """Watches a worker's lease renewals; cuts the worker off at the budget and restores it when one gets through.

    Run ``run()`` in the worker's task group (it returns only when cancelled). ``last_renewal()`` gives the
    ``time.monotonic()`` at which the last renewal the database took was sent (None before the first).
    """

    def __init__(
        self,
        *,
        last_renewal: Callable[[], float | None],
        lease_interval: float,
        lease_ttl: float,
        cut_off: CutOff,
        restored: Restored,
        worker: str = "this worker",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = fence_budget(lease_interval, lease_ttl)
        self.lease_ttl = lease_ttl
        self.cuts = 0
        self._interval = lease_interval
        self._last_renewal = last_renewal
        self._cut_off = cut_off
        self._restored = restored
        self._worker = worker
        self._clock = clock
        self._watching_since = clock()
        self._cut_at: float | None = None

    @property
    def is_cut_off(self) -> bool:
        """True from the cut until a renewal gets through again: the worker must fetch and launch nothing."""
        return self._cut_at is not None

    def silence(self) -> float:
        """Seconds since the last renewal the database took was sent (since watching began, before any)."""
        renewed = self._last_renewal()
        return self._clock() - (self._watching_since if renewed is None else renewed)

    async def run(self) -> None:
        """Check at every deadline; between deadlines, at most every half renewal interval (to see a restoration)."""
        while True:
            silent = await self.check()
            wait = self._interval / 2
            if not self.is_cut_off:
                wait = min(wait, self.budget - silent)
            await anyio.sleep(max(wait, 0.0))

    async def check(self) -> float:
        """Cut off or restore as the silence says; returns the silence it judged."""
        silent = self.silence()
        if self._cut_at is None and silent >= self.budget:
            self._cut_at = self._clock()
            self.cuts += 1
            reason = (
                f"{self._worker} was cut off from the store: its lease was last renewed {silent:.1f} s ago and "
                f"other hosts may take its jobs over {self.lease_ttl:g} s after that, so it killed its sessions "
                "first and fetches no job until the store answers again"
            )
            logger.warning("%s", reason)
            with anyio.CancelScope(shield=True):  # a kill once begun is never left half done
                await self._cut_off(reason)
        elif self._cut_at is not None and silent < self.budget:
            away = self._clock() - self._cut_at
            self._cut_at = None
            logger.warning("%s reached the store again after %.1f s cut off: fetching jobs again", self._worker, away)
            await self._restored()
        return silent
