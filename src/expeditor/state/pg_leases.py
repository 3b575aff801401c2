"""Owner leases: how hosts sharing a PostgreSQL store know which owners of records are still alive.

A process cannot see another host's process table, so every process that owns records through the
store holds a row in ``owners`` whose ``lease_expires_at`` it pushes forward every ``lease_interval``
for ``lease_ttl`` seconds, from a background thread. An owner is alive while its lease is unexpired by
the database's clock (``now()``, never a host's: hosts' clocks disagree) and, when it is on this host,
while its pid and start time are those of a running process (a SIGKILLed local owner is dead at once).
The row is registered with the first write and deleted on close.

A renewal's time is when it was *sent* (``last_renewal``, on this host's monotonic clock): the database
ran it at that moment or later, so the lease it wrote lasts at least ``lease_ttl`` from then. A hung or
slow connection therefore never makes this process believe its lease is younger than it is (a worker's
self-fence counts from it: ``queue.fencing``). Renewals are sent every ``lease_interval`` from the previous
send, and each runs under a statement and lock timeout below the interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from expeditor.errors import StoreUnavailable
from expeditor.process_identity import process_alive
from expeditor.state.claims import OwnerAlive
from expeditor.state.models import DispatchRecord, Owner, RunRecord
from expeditor.state.pg_rows import PgConnection

__all__ = ["Leases"]

logger = logging.getLogger(__name__)

Transaction = Callable[[str, Callable[[PgConnection], Any]], Any]

_NOW = "extract(epoch FROM now())"
_RENEW = (
    "INSERT INTO owners (host, pid, start_time, kind, started_at, lease_expires_at) "
    f"VALUES (%s, %s, %s, %s, {_NOW}, {_NOW} + %s) "
    "ON CONFLICT (host, pid, start_time) DO UPDATE SET lease_expires_at = excluded.lease_expires_at"
)
_BOUNDED = "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)"
_LIVE = f"SELECT host, pid, start_time FROM owners WHERE lease_expires_at > {_NOW}"
_LIVE_ONE = _LIVE + " AND host = %s AND pid = %s AND start_time = %s"


class Leases:
    """This process's lease in one store, and the liveness of every owner recorded there."""

    def __init__(self, transaction: Transaction, *, me: Owner, kind: str, interval: float, ttl: float) -> None:
        """``transaction(doing, work)`` runs ``work`` in one transaction of the store (StoreUnavailable if not)."""
        self.me = me
        self._transaction = transaction
        self._kind = kind
        self._interval = interval
        self._ttl = ttl
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewed_at: float | None = None
        self._failing = False

    @property
    def last_renewal(self) -> float | None:
        """``time.monotonic()`` at which the last renewal the database took was sent (None before the first):
        past ``lease_ttl`` since, other hosts may take this process for dead."""
        return self._renewed_at

    def ensure_registered(self) -> None:
        """Take the lease before this process's first write; raises StoreUnavailable when it cannot."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._renew(f"registering {self.me.describe()} as an owner of records")
            self._thread = threading.Thread(target=self._keep_renewing, name="expeditor-lease", daemon=True)
            self._thread.start()

    def alive_in(self, connection: PgConnection, owners: Iterable[Owner | None] | None = None) -> OwnerAlive:
        """Liveness by the leases as ``connection``'s transaction sees them (one query, then no more)."""
        if owners is not None:
            wanted = [owner for owner in owners if owner is not None]
            if len(wanted) == 1:
                one = wanted[0]
                rows = connection.execute(_LIVE_ONE, (one.host, one.pid, one.start_time)).fetchall()
            else:
                rows = connection.execute(_LIVE).fetchall() if wanted else []
        else:
            rows = connection.execute(_LIVE).fetchall()
        leased = {(row["host"], row["pid"], row["start_time"]) for row in rows}

        def alive(record: DispatchRecord | RunRecord) -> bool:
            owner = record.owner
            if owner is None or (owner.host, owner.pid, owner.start_time) not in leased:
                return False
            return owner.host != self.me.host or process_alive(owner.pid, owner.start_time)

        return alive

    def close(self) -> None:
        """Stop renewing and give the lease up: this process's records are now an ended owner's."""
        with self._lock:
            self._stop.set()
            thread, self._thread = self._thread, None
        if thread is None:
            return
        thread.join(timeout=self._interval + 5)
        me = self.me
        try:
            self._transaction(
                f"releasing the lease of {me.describe()}",
                lambda c: c.execute(
                    "DELETE FROM owners WHERE host = %s AND pid = %s AND start_time = %s",
                    (me.host, me.pid, me.start_time),
                ),
            )
        except StoreUnavailable as exc:
            logger.warning("%s; it expires by itself within %g s", exc, self._ttl)

    def _renew(self, doing: str) -> None:
        me = self.me
        waited = f"{max(1, round(self._interval * 500))}ms"  # half the interval: the next renewal is never held up

        def renew(connection: PgConnection) -> None:
            connection.execute(_BOUNDED, (waited, waited))
            connection.execute(_RENEW, (me.host, me.pid, me.start_time, self._kind, self._ttl))

        sent = time.monotonic()
        self._transaction(doing, renew)
        self._renewed_at = sent if self._renewed_at is None else max(self._renewed_at, sent)

    def _keep_renewing(self) -> None:
        due = time.monotonic()
        while True:
            due = max(due + self._interval, time.monotonic())  # from the previous send, not its answer
            if self._stop.wait(due - time.monotonic()):
                return
            try:
                self._renew(f"renewing the lease of {self.me.describe()}")
            except StoreUnavailable as exc:
                if not self._failing:
                    logger.warning(
                        "%s; other hosts take this process for dead %g s after its last renewal", exc, self._ttl
                    )
                self._failing = True
                continue
            if self._failing:
                logger.warning("the lease of %s is renewed again", self.me.describe())
            self._failing = False
