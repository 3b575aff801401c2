"""What a dispatch call tells its caller: what it did, and the job's record as it stands."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from expeditor.executor import RunResult
from expeditor.state import DispatchRecord, DispatchStatus
from expeditor.usage import SessionUsage

__all__ = ["DispatchOutcome"]


class DispatchOutcome(BaseModel):
    """What a dispatch call did, and the job's record as it stands."""

    campaign_id: str = Field(description="The job's campaign.")
    name: str = Field(description="The job's name within its campaign.")
    dispatch_id: str = Field(description="The job record's id, stable across attempts.")
    status: DispatchStatus = Field(description="The job's status now: success, failure, running, cancelled, ...")
    short_circuited: bool = Field(default=False, description="A recorded success was returned; nothing ran.")
    inputs_changed: bool = Field(default=False, description="The recorded job ran with other inputs.")
    already_running: bool = Field(default=False, description="Another caller's launch of this job is live.")
    resumed: bool = Field(default=False, description="This attempt resumed the previous attempt's session.")
    attempts: int = Field(description="Attempts made at the job so far, this one included.")
    dispatched_session_id: str | None = Field(description="The session of its latest attempt.")
    summary: str | None = Field(default=None, description="The final text of its latest finished attempt.")
    outputs: dict[str, Any] = Field(default_factory=dict, description="What the job captured.")
    usage: SessionUsage | None = Field(
        default=None,
        description="The job's recorded token usage (every attempt); null when it is the same as result.usage.",
    )
    result: RunResult | None = Field(default=None, description="The orchestrator's run, when this call launched it.")
    record_error: str | None = Field(
        default=None,
        description="Why the run's end could not be recorded (the store could not be written); the job may "
        "then run again on the next dispatch. None once it is on record.",
    )
    host: str | None = Field(
        default=None, description="The host whose worker ran (or runs) the latest attempt, when this call knows it."
    )
    worktree: str | None = Field(default=None, description="The git worktree the job runs in, when isolated.")
    branch: str | None = Field(default=None, description="The git branch holding the isolated job's commits.")
    message: str = Field(description="One sentence saying what happened.")

    @classmethod
    def of(cls, record: DispatchRecord, message: str, **flags: Any) -> DispatchOutcome:
        return cls(
            campaign_id=record.campaign_id,
            name=record.name,
            dispatch_id=record.dispatch_id,
            status=record.status,
            attempts=record.attempts,
            dispatched_session_id=record.dispatched_session_id,
            summary=record.result_summary,
            outputs=dict(record.outputs or {}),
            usage=record.usage,
            worktree=record.worktree,
            branch=record.branch,
            message=message,
            **flags,
        )
