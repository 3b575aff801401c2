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

from expeditor.errors import IllegalTransition, StaleAttempt
from expeditor.state.claims import OwnerAlive, interrupt_in
from expeditor.state.models import DispatchRecord, DispatchStatus, RunRecord, RunStatus
from expeditor.state.rows import (
    close_run,
    dispatch_from_row,
    insert_run,
    latest_run,
    read_dispatch,
    read_run_launch,
    write_dispatch,
)

__all__ = ["interrupt_dispatches_in", "restore_dispatch_in", "restore_run_in"]

_UNFINISHED = (DispatchStatus.PENDING, DispatchStatus.RUNNING)


def restore_dispatch_in(connection: sqlite3.Connection, record: DispatchRecord) -> DispatchRecord:
    """Write ``record``, an attempt's end, unless the store's record of the job is no longer that attempt's.

    No record (the store was recreated): ``record`` is inserted whole. The same attempt still pending or
    running: it takes ``record``'s end (pending included: the start that was lost is implied by the end).
    Already ended: that end stands and is returned. Another attempt, or another dispatch of the same
    name: ``StaleAttempt``, since the record belongs to whoever claimed it since.
    """
    job = f"{record.campaign_id}/{record.name}"
    if record.status in _UNFINISHED:
        raise IllegalTransition(f"dispatch {job} can only be restored with its end, not as {record.status}")
    current = read_dispatch(connection, record.campaign_id, record.name)
    if current is None:
        write_dispatch(connection, record)
        return record
    if (current.dispatch_id, current.attempts) != (record.dispatch_id, record.attempts):
        raise StaleAttempt(
            f"dispatch {job} attempt {record.attempts} may not become {record.status}: the record is at attempt "
            f"{current.attempts} ({current.status}), claimed by another caller since"
        )
    if current.status not in _UNFINISHED:
        return current
    write_dispatch(connection, record)
    return record


def restore_run_in(connection: sqlite3.Connection, run: RunRecord) -> RunRecord:
    """Write ``run``, one ended launch, whatever the store kept of it.

    Missing (the store was recreated, or its start was never written): inserted whole. Still running:
    closed with ``run``'s end. Already ended: that end stands. Its launch number taken by another launch
    (another start time: this start was never recorded): inserted as the session's next launch.
    """
    if run.status is RunStatus.RUNNING:
        raise IllegalTransition(f"run {run.run_id} can only be restored with its end, not as running")
    now = time.time()
    run = run.model_copy(update={"finished_at": run.finished_at or now, "updated_at": now})
    current = read_run_launch(connection, run.run_id, run.launch)
    if current is None:
        insert_run(connection, run)
        return run
    if current.started_at != run.started_at:
        latest = latest_run(connection, run.run_id)
        assert latest is not None, "the launch just read is one"
        moved = run.model_copy(update={"launch": latest.launch + 1})
        insert_run(connection, moved)
        return moved
    if current.status is not RunStatus.RUNNING:
        return current
    return close_run(
        connection, current, run.status, run.termination, run.usage, run.reason, now, run.loc_changed, run.evidence
    )


def interrupt_dispatches_in(
    connection: sqlite3.Connection, owner_alive: OwnerAlive, now: float
) -> list[DispatchRecord]:
    """Interrupt every pending or running record whose owner is gone, with its runs; returns them."""
    rows = connection.execute("SELECT * FROM dispatches WHERE status IN ('pending', 'running')")
    orphaned = [record for record in map(dispatch_from_row, rows) if not owner_alive(record)]
    return [interrupt_in(connection, record, owner_alive, now) for record in orphaned]
