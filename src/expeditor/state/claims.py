"""The claim, the attempt fence and a run's launch: the rules every campaign store applies, as pure functions.

A store reads the current record inside its write transaction (SQLite: ``BEGIN IMMEDIATE``;
PostgreSQL: the row taken ``FOR UPDATE``), asks a function here what to do, and writes the
records it is given. The functions read no database and no clock: the request carries the time,
and whether the record's owner is alive is an argument (``owner_alive`` is the store's to answer).

The claim (DESIGN, "Dispatch"): no record → create it pending, launch attempt 1; ``success`` →
short-circuit (a forced claim relaunches); ``running`` or ``pending`` under a live owner →
already running (force never launches twice); ``running`` under a dead owner → ``interrupted``
(with the runs it left running), then relaunch; ``pending`` whose claimer died, ``failure``,
``cancelled``, ``interrupted`` → relaunch with attempts + 1.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from expeditor.errors import IllegalTransition, StaleAttempt
from expeditor.executor.models import Termination
from expeditor.state.models import (
    Claim,
    ClaimAction,
    DispatchRecord,
    DispatchStatus,
    Owner,
    RunEvidence,
    RunRecord,
    RunStatus,
    canonical_json,
    check_transition,
    inputs_hash,
)
from expeditor.usage.models import SessionUsage

__all__ = [
    "UNFINISHED",
    "ClaimDecision",
    "ClaimRequest",
    "OwnerAlive",
    "check_run_end",
    "decide_claim",
    "ended_run",
    "fenced_transition",
    "interrupted",
    "liveness_matters",
    "next_launch",
    "restored_dispatch",
    "restored_run",
    "short_circuit",
]

OwnerAlive = Callable[[DispatchRecord | RunRecord], bool]

UNFINISHED = (DispatchStatus.PENDING, DispatchStatus.RUNNING)


@dataclass(frozen=True)
class ClaimRequest:
    """What a claimer asks for, with its inputs already in canonical form."""

    campaign_id: str
    name: str
    recipe: str
    inputs: dict[str, Any]
    inputs_text: str
    inputs_hash: str
    caller_session_id: str | None
    owner: Owner
    force: bool
    now: float
    dispatch_id: str = field(default_factory=lambda: str(uuid.uuid4()))  # taken only by a new record

    @classmethod
    def of(
        cls,
        campaign_id: str,
        name: str,
        *,
        recipe: str,
        inputs: Mapping[str, Any],
        caller_session_id: str | None,
        owner: Owner,
        force: bool,
        now: float,
    ) -> ClaimRequest:
        """The request of one ``CampaignStore.claim`` call (raises InvalidInput for inputs that are not JSON)."""
        return cls(
            campaign_id=campaign_id,
            name=name,
            recipe=recipe,
            inputs=dict(inputs),
            inputs_text=canonical_json(dict(inputs)),
            inputs_hash=inputs_hash(inputs),
            caller_session_id=caller_session_id,
            owner=owner,
            force=force,
            now=now,
        )

    @property
    def job(self) -> str:
        return f"{self.campaign_id}/{self.name}"


@dataclass(frozen=True)
class ClaimDecision:
    """What a claim does: the answer, and the records to write first, in order.

    ``interrupted`` (when set) is the current record ended as interrupted; the store also closes the
    runs its dead owner left running. ``launched`` (when set) is the record to insert (a new job) or
    to write over the current one (a relaunch). Neither set: the answer needs no write.
    """

    claim: Claim
    interrupted: DispatchRecord | None = None
    launched: DispatchRecord | None = None
    new: bool = False

    @property
    def reason(self) -> str:
        return self.claim.reason

    @property
    def action(self) -> ClaimAction:
        return self.claim.action


def liveness_matters(current: DispatchRecord | None) -> bool:
    """Whether ``decide_claim`` needs to know if ``current``'s owner is alive (ask the store only then)."""
    return current is not None and current.status in UNFINISHED


def decide_claim(current: DispatchRecord | None, request: ClaimRequest, owner_alive: bool) -> ClaimDecision:
    """The claim's outcome given the job's current record; ``owner_alive`` is read only when it matters."""
    if current is None:
        return _create(request)
    recorded = short_circuit(current, request)
    if recorded is not None:
        return ClaimDecision(claim=recorded)
    changed = current.inputs_hash != request.inputs_hash
    status, attempt = current.status, current.attempts
    if status in UNFINISHED and owner_alive:
        return ClaimDecision(
            claim=Claim(
                action=ClaimAction.ALREADY_RUNNING,
                record=current,
                previous_status=status,
                inputs_changed=changed,
                reason=f"{request.job} attempt {attempt} is {status} under {_holder(current)}, which is alive",
            )
        )
    ended: DispatchRecord | None = None
    if status is DispatchStatus.RUNNING:
        ended = interrupted(current, request.now)
        why = f"attempt {attempt} was running under {_holder(current)}, which is gone: interrupted"
    elif status is DispatchStatus.PENDING:
        why = f"attempt {attempt} was claimed by {_holder(current)}, which died before launching it"
    elif status is DispatchStatus.SUCCESS:
        why = f"forced rerun of attempt {attempt}, a success"
    else:
        why = f"attempt {attempt} ended {status}"
    launched = _relaunched(ended or current, request)
    return ClaimDecision(
        claim=Claim(
            action=ClaimAction.LAUNCH,
            record=launched,
            previous_status=status,
            inputs_changed=changed,
            interrupted_owner=None if ended is None else current.owner,
            prior_session_id=launched.resume_session_id,
            reason=f"{request.job}: {why}; launch attempt {attempt + 1}",
        ),
        interrupted=ended,
        launched=launched,
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


def interrupted(record: DispatchRecord, now: float) -> DispatchRecord:
    """``record`` (pending or running) ended as interrupted because its owner is gone."""
    check_transition(record.status, DispatchStatus.INTERRUPTED, what=f"dispatch {record.campaign_id}/{record.name}")
    reason = f"attempt {record.attempts} was interrupted: {_holder(record)} is gone"
    return record.model_copy(
        update={"status": DispatchStatus.INTERRUPTED, "error": reason, "updated_at": now, "finished_at": now}
    )


def fenced_transition(
    current: DispatchRecord | None,
    *,
    job: str,
    attempt: int,
    target: DispatchStatus,
    changes: Mapping[str, object],
    now: float,
) -> DispatchRecord:
    """The record after ``attempt``'s move to ``target`` with ``changes`` (model fields), or why it may not move.

    Raises IllegalTransition when there is no record or the move is not in ``LEGAL_TRANSITIONS``, and
    StaleAttempt when the record is at another attempt (another claimer owns it since).
    """
    if current is None:
        raise IllegalTransition(f"dispatch {job} has no record, so it cannot become {target}")
    if current.attempts != attempt:
        raise StaleAttempt(
            f"dispatch {job} attempt {attempt} may not become {target}: the record is at attempt "
            f"{current.attempts} ({current.status}), claimed by another caller since"
        )
    check_transition(current.status, target, what=f"dispatch {job}")
    return current.model_copy(update={**changes, "status": target, "updated_at": now})


def next_launch(previous: RunRecord | None, run: RunRecord, previous_owner_alive: bool, now: float) -> RunRecord:
    """The launch to record for ``run``: 1, or the previous launch's + 1 (close that one first if running).

    Raises IllegalTransition while the previous launch runs under a live owner.
    """
    launch = 1
    if previous is not None:
        if previous.status is RunStatus.RUNNING and previous_owner_alive:
            raise IllegalTransition(
                f"run {run.run_id} launch {previous.launch} is still running under "
                f"{previous.owner.describe()}: it cannot be launched again until it ends"
            )
        launch = previous.launch + 1
    return run.model_copy(
        update={"launch": launch, "status": RunStatus.RUNNING, "finished_at": None, "updated_at": now}
    )


def check_run_end(current: RunRecord | None, run_id: str, status: RunStatus) -> RunRecord:
    """The launch of ``run_id`` that may take the end ``status``, or IllegalTransition."""
    if current is None:
        raise IllegalTransition(f"run {run_id} was never recorded as started, so it cannot become {status}")
    if current.status is not RunStatus.RUNNING or status is RunStatus.RUNNING:
        raise IllegalTransition(f"run {run_id} cannot go from {current.status} to {status}")
    return current


def _create(request: ClaimRequest) -> ClaimDecision:
    record = DispatchRecord(
        campaign_id=request.campaign_id,
        name=request.name,
        dispatch_id=request.dispatch_id,
        status=DispatchStatus.PENDING,
        attempts=1,
        recipe=request.recipe,
        inputs=request.inputs,
        inputs_hash=request.inputs_hash,
        caller_session_id=request.caller_session_id,
        owner=request.owner,
        created_at=request.now,
        updated_at=request.now,
    )
    claim = Claim(
        action=ClaimAction.LAUNCH,
        record=record,
        previous_status=None,
        inputs_changed=False,
        reason=f"{request.job} was never dispatched: launch attempt 1",
    )
    return ClaimDecision(claim=claim, launched=record, new=True)


def _relaunched(current: DispatchRecord, request: ClaimRequest) -> DispatchRecord:
    check_transition(current.status, DispatchStatus.PENDING, what=f"dispatch {request.job}")
    resume = None if current.status is DispatchStatus.SUCCESS else current.dispatched_session_id
    return current.model_copy(
        update={
            "status": DispatchStatus.PENDING,
            "attempts": current.attempts + 1,
            "recipe": request.recipe,
            "inputs": request.inputs,
            "inputs_hash": request.inputs_hash,
            "caller_session_id": request.caller_session_id,
            "result_summary": None,
            "outputs": {},
            "usage": None,
            "error": None,
            "owner": request.owner,
            "resume_session_id": resume,
            "queue_job_id": None,
            "updated_at": request.now,
            "started_at": None,
            "finished_at": None,
        }
    )


def _holder(record: DispatchRecord) -> str:
    return "an unknown owner" if record.owner is None else record.owner.describe()


def restored_dispatch(current: DispatchRecord | None, record: DispatchRecord) -> tuple[DispatchRecord, bool]:
    """Restoring ``record``, an attempt's end: the record as it will stand, and whether to write it.

    No record (the store was recreated): ``record`` is written whole. The same attempt still pending or
    running: it takes ``record``'s end (pending included: the start that was lost is implied by the end).
    Already ended: that end stands. Another attempt, or another dispatch of the same name: StaleAttempt,
    since the record belongs to whoever claimed it since.
    """
    job = f"{record.campaign_id}/{record.name}"
    if record.status in UNFINISHED:
        raise IllegalTransition(f"dispatch {job} can only be restored with its end, not as {record.status}")
    if current is None:
        return record, True
    if (current.dispatch_id, current.attempts) != (record.dispatch_id, record.attempts):
        raise StaleAttempt(
            f"dispatch {job} attempt {record.attempts} may not become {record.status}: the record is at attempt "
            f"{current.attempts} ({current.status}), claimed by another caller since"
        )
    if current.status not in UNFINISHED:
        return current, False
    return record, True


def restored_run(
    current: RunRecord | None, latest: RunRecord | None, run: RunRecord, now: float
) -> tuple[RunRecord, bool]:
    """Restoring ``run``, one ended launch: the launch as it will stand, and whether to write it whole.

    ``current`` is the stored launch under ``run``'s number, ``latest`` the session's latest launch.
    Missing (the store was recreated, or its start was never written): written whole. Still running:
    closed with ``run``'s end. Already ended: that end stands. Its launch number taken by another launch
    (another start time: this start was never recorded): written as the session's next launch.
    """
    if run.status is RunStatus.RUNNING:
        raise IllegalTransition(f"run {run.run_id} can only be restored with its end, not as running")
    run = run.model_copy(update={"finished_at": run.finished_at or now, "updated_at": now})
    if current is None:
        return run, True
    if current.started_at != run.started_at:
        assert latest is not None, "the launch just read is one"
        return run.model_copy(update={"launch": latest.launch + 1}), True
    if current.status is not RunStatus.RUNNING:
        return current, False
    ended = ended_run(current, run.status, run.termination, run.usage, run.reason, now, run.loc_changed, run.evidence)
    return ended, True


def ended_run(
    run: RunRecord,
    status: RunStatus,
    termination: Termination | None,
    usage: SessionUsage,
    reason: str | None,
    now: float,
    loc_changed: int | None = None,
    evidence: RunEvidence | None = None,
) -> RunRecord:
    """``run`` (running) as it ends: the fields an end sets, and nothing else."""
    changes = {
        "status": status,
        "termination": termination,
        "usage": usage,
        "reason": reason,
        "loc_changed": loc_changed,
        "evidence": evidence,
        "finished_at": now,
        "updated_at": now,
    }
    return run.model_copy(update=changes)
