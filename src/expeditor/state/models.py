"""What the campaign store keeps: dispatch records, runs and pipeline step executions.

A dispatch is one named job of a campaign; ``(campaign_id, name)`` is its identity and
owns exactly one record. Its status moves only along ``LEGAL_TRANSITIONS``; anything else
is refused with ``IllegalTransition`` naming both ends. ``attempts`` counts the claims that
won the right to launch the job and fences every write: a write carrying an older attempt
number comes from a claimer that has since been replaced, and is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from expeditor.errors import IllegalTransition, InvalidInput
from expeditor.executor.models import DecidedBy, KilledProcess, RunResult, SessionKind, Suppression, Termination
from expeditor.process_identity import process_start_time
from expeditor.times import Timestamp
from expeditor.usage.models import SessionUsage

__all__ = [
    "LEGAL_TRANSITIONS",
    "Budget",
    "Claim",
    "ClaimAction",
    "DispatchRecord",
    "DispatchStatus",
    "Owner",
    "RunEvidence",
    "RunRecord",
    "RunStatus",
    "StepExecution",
    "StepStatus",
    "canonical_json",
    "check_transition",
    "inputs_hash",
]


class DispatchStatus(StrEnum):
    """Where a dispatched job stands."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"


_S = DispatchStatus

LEGAL_TRANSITIONS: Mapping[DispatchStatus, frozenset[DispatchStatus]] = {
    # A claim creates a record as pending. A pending record is launched (running), fails to
    # launch (failure), is cancelled or interrupted before launch, or, when its claimer died
    # before launching, is claimed again (pending -> pending, with attempts + 1).
    _S.PENDING: frozenset({_S.PENDING, _S.RUNNING, _S.FAILURE, _S.CANCELLED, _S.INTERRUPTED}),
    _S.RUNNING: frozenset({_S.SUCCESS, _S.FAILURE, _S.CANCELLED, _S.INTERRUPTED}),
    # Every ended record can only be claimed again; a success only by a forced claim.
    _S.SUCCESS: frozenset({_S.PENDING}),
    _S.FAILURE: frozenset({_S.PENDING}),
    _S.INTERRUPTED: frozenset({_S.PENDING}),
    _S.CANCELLED: frozenset({_S.PENDING}),
}


def check_transition(current: DispatchStatus, target: DispatchStatus, *, what: str = "dispatch") -> None:
    """Raise IllegalTransition unless ``current -> target`` is in ``LEGAL_TRANSITIONS``."""
    if target not in LEGAL_TRANSITIONS[current]:
        allowed = ", ".join(sorted(LEGAL_TRANSITIONS[current]))
        raise IllegalTransition(f"{what} cannot go from {current} to {target}: from {current} it may become {allowed}")


class RunStatus(StrEnum):
    """Where one managed session stands: running until it ends one of four ways."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @classmethod
    def from_termination(cls, termination: Termination, *, is_error: bool) -> RunStatus:
        """How a run's end maps to a status (DESIGN, "Dispatch")."""
        if termination is Termination.COMPLETED:
            return cls.FAILURE if is_error else cls.SUCCESS
        if termination is Termination.CANCELLED:
            return cls.CANCELLED
        return cls.FAILURE


class StepStatus(StrEnum):
    """Where one execution of a pipeline step stands."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class Owner(BaseModel):
    """The process that owns a record: it launched the job or supervises the run.

    ``start_time`` tells the owner from a later process that reused its pid.
    """

    model_config = ConfigDict(frozen=True)

    pid: int = Field(gt=0, description="Its process id.")
    start_time: float = Field(
        description="The process's start time as psutil reports it (epoch seconds): an identity, compared exactly, "
        "not a time to read."
    )
    host: str = Field(min_length=1, description="The host it runs on.")

    @classmethod
    def current(cls, host: str | None = None) -> Owner:
        """This process, on this host: ``host`` as the store names it (the ``host_name`` setting), by
        default the machine's host name."""
        pid = os.getpid()
        start_time = process_start_time(pid)
        assert start_time is not None, "the current process always has a start time"
        return cls(pid=pid, start_time=start_time, host=socket.gethostname() if host is None else host)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the same value always gives the same text."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"inputs must be JSON values (strings, numbers, booleans, lists, objects): {exc}") from exc


def inputs_hash(inputs: Mapping[str, Any]) -> str:
    """sha256 of the inputs' canonical JSON: stable across key order."""
    return hashlib.sha256(canonical_json(dict(inputs)).encode("utf-8")).hexdigest()


class DispatchRecord(BaseModel):
    """The one record of a named job in a campaign."""

    model_config = ConfigDict(frozen=True)

    campaign_id: str = Field(min_length=1, description="The campaign the job belongs to.")
    name: str = Field(min_length=1, description="The job's name within its campaign.")
    dispatch_id: str = Field(description="Stable for the record's whole life, across attempts.")
    status: DispatchStatus = Field(
        description="pending, running, success, failure, interrupted (its server died) or cancelled."
    )
    attempts: int = Field(ge=1, description="Claims that won the launch; the current attempt number.")
    recipe: str = Field(description="The recipe the job follows.")
    inputs: dict[str, Any] = Field(default_factory=dict, description="The inputs of the latest attempt.")
    inputs_hash: str = Field(description="sha256 of the inputs' canonical JSON, to tell changed inputs.")
    caller_session_id: str | None = Field(default=None, description="The session that asked for the latest attempt.")
    dispatched_session_id: str | None = Field(
        default=None, description="The session of the latest attempt that started (kept across claims, for resume)."
    )
    result_summary: str | None = Field(default=None, description="The final text of the latest finished attempt.")
    outputs: dict[str, Any] = Field(default_factory=dict, description="What the job captured (a pipeline's captures).")
    usage: SessionUsage | None = Field(default=None, description="Token usage of its sessions, every attempt.")
    error: str | None = Field(default=None, description="Why the latest attempt failed, was cancelled or interrupted.")
    owner: Owner | None = Field(
        default=None, description="The process that claimed the latest attempt, or the worker that took it over."
    )
    resume_session_id: str | None = Field(
        default=None,
        description="The session the pending attempt resumes (the previous unsuccessful attempt's), if any: "
        "whoever launches it reads it here, not from the claimer.",
    )
    queue_job_id: int | None = Field(
        default=None, description="The queue's job that runs the latest attempt (dispatch_mode queue only)."
    )
    cwd: str | None = Field(
        default=None, description="Queued jobs: the directory the latest attempt runs in, on whichever host runs it."
    )
    stale_threshold: float | None = Field(
        default=None, description="Queued jobs: the latest attempt's stale threshold, when its caller set one."
    )
    created_at: Timestamp = Field(description="When the job was first dispatched.")
    updated_at: Timestamp = Field(description="When its record last changed.")
    started_at: Timestamp | None = Field(default=None, description="When its latest attempt started.")
    finished_at: Timestamp | None = Field(default=None, description="When its latest attempt ended.")
    worktree: str | None = Field(
        default=None, description="The git worktree its latest attempt ran in (isolation: worktree); None: the cwd."
    )
    branch: str | None = Field(default=None, description="The git branch of that worktree: the job's deliverable.")
    isolation: str | None = Field(
        default=None, description="'worktree' when a queued job runs isolated (the worker reads it); None: not queued."
    )


class RunEvidence(BaseModel):
    """Why a run ended as it did, kept with its record for anyone asking later ("why was it killed?")."""

    model_config = ConfigDict(frozen=True)

    decided_by: DecidedBy
    suppressed_by: list[Suppression] = Field(default_factory=list[Suppression])
    suppressed_s: float = Field(default=0.0, ge=0, description="Silence vouched for by execution markers, seconds.")
    killed: list[KilledProcess] = Field(default_factory=list[KilledProcess])

    @classmethod
    def of(cls, result: RunResult) -> RunEvidence:
        return cls(
            decided_by=result.decided_by,
            suppressed_by=result.suppressed_by,
            suppressed_s=result.suppressed_s,
            killed=result.killed,
        )


class RunRecord(BaseModel):
    """One launch of a managed session: a run_skill call, a dispatched orchestrator or a pipeline step.

    The run id is the session id. Resuming a session launches it again under the same id, so
    ``launch`` numbers the launches of one session (1 for the first) and each keeps its own row.
    """

    model_config = ConfigDict(frozen=True)

    run_id: str = Field(min_length=1, description="The session id.")
    launch: int = Field(default=1, ge=1, description="Set by the store when the run is recorded.")
    kind: SessionKind
    status: RunStatus = RunStatus.RUNNING
    caller_session_id: str | None = None
    campaign_id: str | None = None
    job_name: str | None = Field(default=None, description="The dispatch or pipeline job the run belongs to.")
    dispatch_id: str | None = None
    attempt: int | None = Field(default=None, ge=1, description="The dispatch attempt the run serves.")
    step_sequence: int | None = Field(default=None, ge=1, description="The pipeline step execution it runs.")
    termination: Termination | None = None
    usage: SessionUsage = Field(default_factory=SessionUsage)
    reason: str | None = None
    transcript_path: str | None = None
    label: str | None = Field(
        default=None, description="What the run was for, as reports name it: the step, or the skill command."
    )
    model: str | None = Field(default=None, description="The model asked for at launch; None for the CLI's default.")
    api_base_url: str | None = Field(
        default=None, description="ANTHROPIC_BASE_URL in the session's environment, when one was set."
    )
    loc_changed: int | None = Field(
        default=None, ge=0, description="Lines added plus removed in its working directory (None: not measured)."
    )
    evidence: RunEvidence | None = Field(default=None, description="Set when the run ended under supervision.")
    last_moved_at: float | None = Field(
        default=None, description="When the session last showed activity, as its supervisor last reported it."
    )
    owner: Owner = Field(description="The process supervising the run.")
    started_at: Timestamp = Field(description="When the session was launched.")
    finished_at: Timestamp | None = Field(default=None, description="When it ended; None while it runs.")
    updated_at: Timestamp | None = Field(default=None, description="When its record last changed.")


class StepExecution(BaseModel):
    """One execution of a pipeline step; a loop that visits a step twice records two."""

    model_config = ConfigDict(frozen=True)

    campaign_id: str = Field(min_length=1)
    job_name: str = Field(min_length=1)
    sequence: int = Field(ge=1, description="Order of execution within the pipeline run, from 1.")
    step: str = Field(min_length=1)
    status: StepStatus
    captures: dict[str, str] = Field(default_factory=dict)
    run_id: str | None = Field(default=None, description="The latest run (attempt) of this execution.")
    started_at: Timestamp | None = Field(default=None, description="When its first attempt started.")
    finished_at: Timestamp | None = Field(default=None, description="When its latest attempt ended.")
    usage: SessionUsage | None = Field(default=None, description="Usage of every attempt of this execution.")
    attempts: int = Field(default=0, ge=0, description="Runs launched for this execution (1 + retries used).")
    reason: str | None = Field(default=None, description="Why it ended as it did, for the end-of-run summary.")


class Budget(BaseModel):
    """A ceiling on what a campaign, or one job of it, may spend; past it nothing more of it is launched."""

    model_config = ConfigDict(frozen=True)

    campaign_id: str = Field(min_length=1, description="The campaign it bounds.")
    job_name: str | None = Field(
        default=None, min_length=1, description="The job it bounds (a recipe's budget); None for the whole campaign."
    )
    max_budget_usd: float | None = Field(default=None, gt=0, description="Most USD its runs may cost.")
    max_tokens: int | None = Field(
        default=None, gt=0, description="Most tokens (input, output, cache reads and writes) its runs may use."
    )
    updated_at: Timestamp | None = Field(default=None, description="When it was last set.")

    @property
    def scope(self) -> str:
        return f"job {self.campaign_id}/{self.job_name}" if self.job_name else f"campaign {self.campaign_id}"


class ClaimAction(StrEnum):
    """What the caller of a claim should do next."""

    LAUNCH = "launch"
    SHORT_CIRCUIT = "short_circuit"
    ALREADY_RUNNING = "already_running"


class Claim(BaseModel):
    """The answer to a claim: what to do, the record as the claim left it, and why."""

    model_config = ConfigDict(frozen=True)

    action: ClaimAction
    record: DispatchRecord
    previous_status: DispatchStatus | None = Field(description="The record's status before the claim; None if new.")
    inputs_changed: bool = Field(description="The claim's inputs differ from the record's (short-circuit, running).")
    interrupted_owner: Owner | None = Field(
        default=None, description="Set when the claim found the record running under a dead owner and interrupted it."
    )
    prior_session_id: str | None = Field(
        default=None,
        description="On a launch after an unsuccessful attempt: its session, to resume if its transcript exists.",
    )
    reason: str = Field(description="One sentence saying why this action.")

    @property
    def attempt(self) -> int:
        """The attempt number to fence this caller's writes with."""
        return self.record.attempts
