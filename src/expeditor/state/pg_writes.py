"""The PostgreSQL store's writes: read the rows ``FOR UPDATE``, apply the shared rules, write what they say.

Every function here runs inside the transaction its caller owns; the rules are ``state.claims``'s,
the same functions the SQLite store applies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from expeditor.state.claims import (
    ClaimRequest,
    check_run_end,
    decide_claim,
    ended_run,
    fenced_transition,
    interrupted,
    liveness_matters,
    next_launch,
)
from expeditor.state.models import Claim, ClaimAction, DispatchRecord, DispatchStatus, RunRecord, RunStatus
from expeditor.state.pg_leases import Leases
from expeditor.state.pg_rows import (
    PgConnection,
    dispatch_from_row,
    insert_dispatch_if_new,
    latest_run,
    read_dispatch,
    run_from_row,
    write_dispatch,
    write_run,
)
from expeditor.usage.models import SessionUsage

__all__ = [
    "OnLaunch",
    "claim_in",
    "finish_run_in",
    "interrupt_dispatches_in",
    "interrupt_runs_in",
    "start_run_in",
    "transition_in",
]

OnLaunch = Callable[[PgConnection, Claim], None]
"""Run inside a launching claim's transaction (in a savepoint): what must commit with the claim or not at all."""


def claim_in(connection: PgConnection, request: ClaimRequest, leases: Leases, on_launch: OnLaunch | None) -> Claim:
    """A new job's row is inserted (of concurrent claimers exactly one inserts it); otherwise the row is
    taken ``FOR UPDATE`` and the rules decide."""
    decision = decide_claim(None, request, owner_alive=False)
    assert decision.launched is not None, "a new job is always launched"
    if not insert_dispatch_if_new(connection, decision.launched):
        current = read_dispatch(connection, request.campaign_id, request.name, for_update=True)
        alive = current is not None and liveness_matters(current)
        alive = alive and current is not None and leases.alive_in(connection, [current.owner])(current)
        decision = decide_claim(current, request, alive)
        if decision.interrupted is not None:
            write_dispatch(connection, decision.interrupted)
            _close_runs_of_dead_owner(connection, decision.interrupted, leases, request.now)
        if decision.launched is not None:
            write_dispatch(connection, decision.launched)
    if decision.action is ClaimAction.LAUNCH and on_launch is not None:
        with connection.transaction():
            on_launch(connection, decision.claim)
    return decision.claim


def transition_in(
    connection: PgConnection,
    campaign_id: str,
    name: str,
    *,
    attempt: int,
    target: DispatchStatus,
    changes: Mapping[str, object],
    now: float,
) -> DispatchRecord:
    current = read_dispatch(connection, campaign_id, name, for_update=True)
    job = f"{campaign_id}/{name}"
    updated = fenced_transition(current, job=job, attempt=attempt, target=target, changes=changes, now=now)
    write_dispatch(connection, updated)
    return updated


def start_run_in(connection: PgConnection, run: RunRecord, leases: Leases, now: float) -> RunRecord:
    # Two starts of one session at once serialise here: the first launch has no row to lock yet.
    connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"expeditor run {run.run_id}",))
    previous = latest_run(connection, run.run_id, for_update=True)
    running = previous if previous is not None and previous.status is RunStatus.RUNNING else None
    alive = running is not None and leases.alive_in(connection, [running.owner])(running)
    stored = next_launch(previous, run, alive, now)
    if running is not None:
        reason = f"{running.owner.describe()} is gone"
        write_run(connection, ended_run(running, RunStatus.INTERRUPTED, None, running.usage, reason, now))
    write_run(connection, stored)
    return stored


def finish_run_in(
    connection: PgConnection, run_id: str, status: RunStatus, end: Callable[[RunRecord], RunRecord]
) -> RunRecord:
    current = check_run_end(latest_run(connection, run_id, for_update=True), run_id, status)
    ended = end(current)
    write_run(connection, ended)
    return ended


def interrupt_runs_in(
    connection: PgConnection, leases: Leases, usage: Mapping[tuple[str, int], SessionUsage], now: float
) -> list[RunRecord]:
    # SKIP LOCKED: a row another transaction holds is being written by someone alive; it is not waited for.
    rows = connection.execute("SELECT * FROM runs WHERE status = 'running' FOR UPDATE SKIP LOCKED").fetchall()
    running = [run_from_row(row) for row in rows]
    alive = leases.alive_in(connection)
    ended: list[RunRecord] = []
    for run in running:
        if alive(run):
            continue
        known = usage.get((run.run_id, run.launch), run.usage)
        closed = ended_run(run, RunStatus.INTERRUPTED, None, known, f"{run.owner.describe()} is gone", now)
        write_run(connection, closed)
        ended.append(closed)
    return ended


def interrupt_dispatches_in(connection: PgConnection, leases: Leases, now: float) -> list[DispatchRecord]:
    # A queued attempt (it has a job) is the queue's: its claimer's death does not stop it, and the worker
    # running it is taken over by stall recovery, which queues the next attempt; interrupting it here would
    # leave its job fenced out and nothing to run it again.
    unfinished_rows = (
        "SELECT * FROM dispatches WHERE status IN ('pending', 'running') AND queue_job_id IS NULL "
        "FOR UPDATE SKIP LOCKED"
    )
    rows = connection.execute(unfinished_rows)
    unfinished = [dispatch_from_row(row) for row in rows.fetchall()]
    alive = leases.alive_in(connection)
    ended: list[DispatchRecord] = []
    for record in unfinished:
        if alive(record):
            continue
        closed = interrupted(record, now)
        write_dispatch(connection, closed)
        _close_runs_of_dead_owner(connection, closed, leases, now)
        ended.append(closed)
    return ended


def _close_runs_of_dead_owner(connection: PgConnection, ended: DispatchRecord, leases: Leases, now: float) -> None:
    """Interrupt the runs of ``ended`` (just interrupted) still recorded running under a dead owner."""
    rows = connection.execute(
        "SELECT * FROM runs WHERE dispatch_id = %s AND status = 'running' FOR UPDATE", (ended.dispatch_id,)
    ).fetchall()
    runs = [run_from_row(row) for row in rows]
    alive = leases.alive_in(connection, [run.owner for run in runs])
    for run in runs:
        if not alive(run):
            reason = f"{ended.error}; so is this run"
            write_run(connection, ended_run(run, RunStatus.INTERRUPTED, None, run.usage, reason, now))
