"""The claim: inside one write transaction, decide who launches a job and record it.

The rules (DESIGN, "Dispatch"): no record → create it pending, launch attempt 1;
``success`` → short-circuit (a forced claim relaunches); ``running`` or ``pending`` under a
live owner → already running (force never launches twice); ``running`` under a dead owner →
``interrupted`` (with the runs it left running), then relaunch; ``pending`` whose claimer
died, ``failure``, ``cancelled``, ``interrupted`` → relaunch with attempts + 1.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from expeditor.state.models import (
    Claim,
    ClaimAction,
    DispatchRecord,
    DispatchStatus,
    Owner,
    RunRecord,
    RunStatus,
    check_transition,
)
from expeditor.state.rows import close_run, read_dispatch, run_from_row

__all__ = ["ClaimRequest", "OwnerAlive", "claim_in", "interrupt_in", "short_circuit"]

OwnerAlive = Callable[[DispatchRecord | RunRecord], bool]


@dataclass(frozen=True)
class ClaimRequest:
    """What a claimer asks for, with its inputs already in canonical form."""

    campaign_id: str
    name: str
    recipe: str
    inputs_text: str
    inputs_hash: str
    caller_session_id: str | None
    owner: Owner
    force: bool
    now: float

    @property
    def job(self) -> str:
        return f"{self.campaign_id}/{self.name}"


def claim_in(connection: sqlite3.Connection, request: ClaimRequest, owner_alive: OwnerAlive) -> Claim:
    """Decide and record the claim; call inside ``BEGIN IMMEDIATE``."""
    current = read_dispatch(connection, request.campaign_id, request.name)
    if current is None:
        return _create(connection, request)
    recorded = short_circuit(current, request)
    if recorded is not None:
        return recorded
    changed = current.inputs_hash != request.inputs_hash
    status, attempt = current.status, current.attempts
    interrupted_owner: Owner | None = None
    if status in (DispatchStatus.RUNNING, DispatchStatus.PENDING):
        if owner_alive(current):
            return Claim(
                action=ClaimAction.ALREADY_RUNNING,
                record=current,
                previous_status=status,
                inputs_changed=changed,
                reason=f"{request.job} attempt {attempt} is {status} under {_holder(current)}, which is alive",
            )
        if status is DispatchStatus.RUNNING:
            interrupted_owner = current.owner
            current = interrupt_in(connection, current, owner_alive, request.now)
    retried = status is not DispatchStatus.SUCCESS
    if interrupted_owner is not None:
        why = f"attempt {attempt} was running under {interrupted_owner.describe()}, which is gone: interrupted"
    elif status is DispatchStatus.PENDING:
        why = f"attempt {attempt} was claimed by {_holder(current)}, which died before launching it"
    else:
        why = f"attempt {attempt} ended {status}" if retried else f"forced rerun of attempt {attempt}, a success"
    return Claim(
        action=ClaimAction.LAUNCH,
        record=_relaunch(connection, current, request),
        previous_status=status,
        inputs_changed=changed,
        interrupted_owner=interrupted_owner,
        prior_session_id=current.dispatched_session_id if retried else None,
        reason=f"{request.job}: {why}; launch attempt {attempt + 1}",
    )


def short_circuit(current: DispatchRecord | None, request: ClaimRequest) -> Claim | None:
    """The answer to a claim of a job that succeeded (unless forced), or None: it needs no write."""
    if current is None or current.status is not DispatchStatus.SUCCESS or request.force:
        return None
    changed = current.inputs_hash != request.inputs_hash
    note = "; its inputs differ from this call's (force reruns it)" if changed else ""
    return Claim(
        action=ClaimAction.SHORT_CIRCUIT,
        record=current,
        previous_status=current.status,
        inputs_changed=changed,
        reason=f"{request.job} succeeded in attempt {current.attempts}: its recorded result stands{note}",
    )


def _create(connection: sqlite3.Connection, request: ClaimRequest) -> Claim:
    owner = request.owner
    connection.execute(
        "INSERT INTO dispatches (campaign_id, name, dispatch_id, status, attempts, recipe, inputs, inputs_hash, "
        "caller_session_id, owner_pid, owner_start_time, owner_host, created_at, updated_at) "
        "VALUES (?, ?, ?, 'pending', 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            request.campaign_id,
            request.name,
            str(uuid.uuid4()),
            request.recipe,
            request.inputs_text,
            request.inputs_hash,
            request.caller_session_id,
            owner.pid,
            owner.start_time,
            owner.host,
            request.now,
            request.now,
        ),
    )
    return Claim(
        action=ClaimAction.LAUNCH,
        record=_reread(connection, request.campaign_id, request.name),
        previous_status=None,
        inputs_changed=False,
        reason=f"{request.job} was never dispatched: launch attempt 1",
    )


def _relaunch(connection: sqlite3.Connection, current: DispatchRecord, request: ClaimRequest) -> DispatchRecord:
    check_transition(current.status, DispatchStatus.PENDING, what=f"dispatch {request.job}")
    owner = request.owner
    connection.execute(
        "UPDATE dispatches SET status = 'pending', attempts = attempts + 1, recipe = ?, inputs = ?, inputs_hash = ?, "
        "caller_session_id = ?, result_summary = NULL, outputs = '{}', usage = NULL, error = NULL, owner_pid = ?, "
        "owner_start_time = ?, owner_host = ?, updated_at = ?, started_at = NULL, finished_at = NULL "
        "WHERE campaign_id = ? AND name = ? AND attempts = ?",
        (
            request.recipe,
            request.inputs_text,
            request.inputs_hash,
            request.caller_session_id,
            owner.pid,
            owner.start_time,
            owner.host,
            request.now,
            current.campaign_id,
            current.name,
            current.attempts,
        ),
    )
    return _reread(connection, current.campaign_id, current.name)


def interrupt_in(
    connection: sqlite3.Connection, record: DispatchRecord, owner_alive: OwnerAlive, now: float
) -> DispatchRecord:
    """pending or running -> interrupted for a record whose owner died, and the runs it left running."""
    check_transition(record.status, DispatchStatus.INTERRUPTED, what=f"dispatch {record.campaign_id}/{record.name}")
    reason = f"attempt {record.attempts} was interrupted: {_holder(record)} is gone"
    connection.execute(
        "UPDATE dispatches SET status = 'interrupted', error = ?, updated_at = ?, finished_at = ? "
        "WHERE campaign_id = ? AND name = ?",
        (reason, now, now, record.campaign_id, record.name),
    )
    rows = connection.execute("SELECT * FROM runs WHERE dispatch_id = ? AND status = 'running'", (record.dispatch_id,))
    for run in [run_from_row(row) for row in rows]:
        if not owner_alive(run):
            close_run(connection, run, RunStatus.INTERRUPTED, None, run.usage, f"{reason}; so is this run", now)
    return _reread(connection, record.campaign_id, record.name)


def _reread(connection: sqlite3.Connection, campaign_id: str, name: str) -> DispatchRecord:
    record = read_dispatch(connection, campaign_id, name)
    assert record is not None, "read inside the transaction that wrote it"
    return record


def _holder(record: DispatchRecord) -> str:
    return "an unknown owner" if record.owner is None else record.owner.describe()
