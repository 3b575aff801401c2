"""Records brought to an end after the fact: ends the store lost, and records whose owner died.

A store that was recreated (moved aside as corrupt, or deleted) no longer holds the record a
finished run or job must close; its owner still knows the whole record, so it writes it again
(``restore_run_in``, ``restore_dispatch_in``). At start-up, records left ``pending`` or ``running``
by a process that died are interrupted (``interrupt_dispatches_in``), so nobody reads them as live.

Every function here runs inside the write transaction its caller owns.
"""

from __future__ import annotations

import sqlite3
import time

from expeditor.state.claims import OwnerAlive, restored_dispatch, restored_run
from expeditor.state.models import DispatchRecord, RunRecord
from expeditor.state.rows import (
    dispatch_from_row,
    latest_run,
    read_dispatch,
    read_run_launch,
    write_dispatch,
    write_run,
)
from expeditor.state.sqlite_claims import interrupt_in

__all__ = ["interrupt_dispatches_in", "restore_dispatch_in", "restore_run_in"]


def restore_dispatch_in(connection: sqlite3.Connection, record: DispatchRecord) -> DispatchRecord:
    """Write ``record``, an attempt's end, unless the store's record of the job is no longer that attempt's
    (the rules: ``claims.restored_dispatch``)."""
    stored, write = restored_dispatch(read_dispatch(connection, record.campaign_id, record.name), record)
    if write:
        write_dispatch(connection, stored)
    return stored


def restore_run_in(connection: sqlite3.Connection, run: RunRecord) -> RunRecord:
    """Write ``run``, one ended launch, whatever the store kept of it (the rules: ``claims.restored_run``)."""
    current = read_run_launch(connection, run.run_id, run.launch)
    latest = None if current is None else latest_run(connection, run.run_id)
    stored, write = restored_run(current, latest, run, time.time())
    if write:
        write_run(connection, stored)
    return stored


def interrupt_dispatches_in(
    connection: sqlite3.Connection, owner_alive: OwnerAlive, now: float
) -> list[DispatchRecord]:
    """Interrupt every pending or running record whose owner is gone, with its runs; returns them."""
    rows = connection.execute("SELECT * FROM dispatches WHERE status IN ('pending', 'running')")
    orphaned = [record for record in map(dispatch_from_row, rows) if not owner_alive(record)]
    return [interrupt_in(connection, record, owner_alive, now) for record in orphaned]
