"""The SQLite side of the claim: read the record, apply the shared rules (``state.claims``), write what they say.

Every function here runs inside the ``BEGIN IMMEDIATE`` transaction its caller owns, so the read,
the decision and the writes are one atomic step across threads and processes.
"""

from __future__ import annotations

import sqlite3

from expeditor.state.claims import ClaimRequest, OwnerAlive, decide_claim, interrupted, liveness_matters
from expeditor.state.models import Claim, DispatchRecord, RunStatus
from expeditor.state.rows import close_run, read_dispatch, run_from_row, write_dispatch

__all__ = ["claim_in", "interrupt_in"]


def claim_in(connection: sqlite3.Connection, request: ClaimRequest, owner_alive: OwnerAlive) -> Claim:
    """Decide and record the claim."""
    current = read_dispatch(connection, request.campaign_id, request.name)
    alive = current is not None and liveness_matters(current) and owner_alive(current)
    decision = decide_claim(current, request, alive)
    if decision.interrupted is not None:
        write_dispatch(connection, decision.interrupted)
        close_runs_of_dead_owner(connection, decision.interrupted, owner_alive, request.now)
    if decision.launched is not None:
        write_dispatch(connection, decision.launched)
    return decision.claim


def interrupt_in(
    connection: sqlite3.Connection, record: DispatchRecord, owner_alive: OwnerAlive, now: float
) -> DispatchRecord:
    """pending or running -> interrupted for a record whose owner died, and the runs it left running."""
    ended = interrupted(record, now)
    write_dispatch(connection, ended)
    close_runs_of_dead_owner(connection, ended, owner_alive, now)
    return ended


def close_runs_of_dead_owner(
    connection: sqlite3.Connection, ended: DispatchRecord, owner_alive: OwnerAlive, now: float
) -> None:
    """Interrupt the runs of ``ended`` (just interrupted) still recorded running under a dead owner."""
    rows = connection.execute("SELECT * FROM runs WHERE dispatch_id = ? AND status = 'running'", (ended.dispatch_id,))
    for run in [run_from_row(row) for row in rows]:
        if not owner_alive(run):
            close_run(connection, run, RunStatus.INTERRUPTED, None, run.usage, f"{ended.error}; so is this run", now)
