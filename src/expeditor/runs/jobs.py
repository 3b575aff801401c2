"""One job's life, however the job is run: claim → short-circuit | already running | launch → record the end.

A job is a (campaign, name) record in the store. ``dispatch`` launches it as a supervised
orchestrator or pipeline-runner session; ``expeditor recipe run`` runs its pipeline in-process.
Both go through ``JobLifecycle``: the claim half (``claim``) decides, atomically, whether this
caller launches; the launch half (``launch``) marks the attempt running, runs it within the
process's concurrency limit and records its end through ``record_job_end``, the one function that
writes a job's end, whatever stopped it and whatever happened to the store meanwhile (see
``expeditor.runs.endings``). The two halves meet only in the store's ``Claim``, so claiming in one
process and launching in another is a cut between them.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import anyio

from expeditor.errors import ExpeditorError, IllegalTransition
from expeditor.reports import campaign_runs, job_usage
from expeditor.runs.endings import EndRetry, encodable_copy, land_end
from expeditor.state import (
    CampaignStore,
    Claim,
    ClaimAction,
    DispatchRecord,
    DispatchStatus,
    OnLaunchHook,
    Owner,
    RunStatus,
    inputs_hash,
)
from expeditor.usage import SessionUsage

__all__ = [
    "AttemptBody",
    "ClaimedJob",
    "FencedOut",
    "JobEnd",
    "JobLifecycle",
    "MarkRunning",
    "RecordedEnd",
    "ended_by",
    "record_job_end",
    "steps_to_forget",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobEnd:
    """How an attempt of a job ended, as its record will say.

    ``outputs`` of a success: None takes the captures of the job's recorded steps (the latest value of
    each name winning), read when the end is recorded.
    """

    status: RunStatus
    reason: str
    summary: str | None = None
    outputs: Mapping[str, str] | None = None


@dataclass(frozen=True)
class RecordedEnd:
    """A job's record once its end was written; ``error`` says why it could not be, and ``record`` is then
    the record as the end would have left it."""

    record: DispatchRecord
    restored: bool = False
    error: str | None = None


class FencedOut(IllegalTransition):
    """The attempt could not be taken: its record moved on (another launcher took it, or a newer claim). Nothing
    ran, and its end is not this launcher's to record."""


class MarkRunning(Protocol):
    """Marks the attempt running as its session starts: in ``worktree`` on ``branch`` when the job is isolated."""

    async def __call__(
        self, started_session_id: str, /, *, worktree: str | None = None, branch: str | None = None
    ) -> None: ...


AttemptBody = Callable[[MarkRunning], Awaitable[JobEnd]]


@dataclass(frozen=True)
class ClaimedJob:
    """The store's answer to a claim, and the recorded step executions it made the job forget."""

    claim: Claim
    forgotten_steps: int = 0
    forgotten_because: str | None = None

    @property
    def record(self) -> DispatchRecord:
        return self.claim.record


def ended_by(exc: BaseException) -> JobEnd:
    """How an attempt ends when something raised before it could say so itself."""
    if isinstance(exc, anyio.get_cancelled_exc_class() | KeyboardInterrupt):
        return JobEnd(RunStatus.CANCELLED, "the job was stopped before its attempt ended")
    if isinstance(exc, ExpeditorError):
        return JobEnd(RunStatus.FAILURE, str(exc))
    return JobEnd(RunStatus.FAILURE, f"expeditor failed while running the job: {exc!r}")


def steps_to_forget(previous: DispatchRecord | None, inputs: Mapping[str, str], *, forced: bool) -> str | None:
    """Why a job's recorded step executions must not be replayed by its next launch; None to replay them.

    A forced rerun (or a relaunch of a job that succeeded) starts over; steps recorded under other
    inputs did other work, and their captures would lie to the steps after them.
    """
    if previous is None:
        return None
    if forced or previous.status is DispatchStatus.SUCCESS:
        return "a forced rerun starts the job over"
    if previous.inputs_hash != inputs_hash(dict(inputs)):
        return "the job's inputs changed since its steps were recorded, so it starts over"
    return None


def record_job_end(
    store: CampaignStore,
    claimed: DispatchRecord,
    end: JobEnd,
    *,
    session_id: str | None = None,
    retry: EndRetry | None = None,
) -> tuple[DispatchRecord, bool]:
    """Write the end of the attempt ``claimed`` (the record its claim returned) with what the job cost: every
    session it ran, in every attempt, the run_skill calls of its orchestrators included. Fenced by attempt.

    ``session_id`` is the attempt's session, when it started. What fails while writing is handled as
    ``land_end`` says: retried, else the whole ended record is written again (a recreated store gets it
    back); returns the record as stored and whether it had to be restored. Raises when even that fails.
    """
    campaign_id, name, attempt = claimed.campaign_id, claimed.name, claimed.attempts
    usage = job_usage(campaign_runs(store, campaign_id, name))
    succeeded = end.status is RunStatus.SUCCESS
    outputs = dict(end.outputs) if end.outputs is not None else _step_captures(store, campaign_id, name)

    def mark() -> DispatchRecord:
        if end.status is RunStatus.INTERRUPTED:
            return store.mark_interrupted(campaign_id, name, attempt=attempt, reason=end.reason)
        if succeeded:
            return store.mark_succeeded(
                campaign_id, name, attempt=attempt, summary=end.summary, outputs=outputs, usage=usage
            )
        if end.status is RunStatus.CANCELLED:
            return store.mark_cancelled(campaign_id, name, attempt=attempt, reason=end.reason, usage=usage)
        return store.mark_failed(campaign_id, name, attempt=attempt, error=end.reason, summary=end.summary, usage=usage)

    def restore() -> DispatchRecord:
        return store.restore_dispatch(_ended_record(claimed, end, session_id=session_id, outputs=outputs, usage=usage))

    return land_end(f"recording the end of {campaign_id}/{name}", mark, restore, retry or EndRetry())


def _ended_record(
    claimed: DispatchRecord,
    end: JobEnd,
    *,
    session_id: str | None,
    outputs: Mapping[str, str],
    usage: SessionUsage | None,
) -> DispatchRecord:
    """The whole record as ``end`` leaves the attempt ``claimed``, its text encodable: what a store that lost
    the record is given back, and what the caller is shown when no store would take it."""
    status = {
        RunStatus.SUCCESS: DispatchStatus.SUCCESS,
        RunStatus.CANCELLED: DispatchStatus.CANCELLED,
        RunStatus.INTERRUPTED: DispatchStatus.INTERRUPTED,
    }.get(end.status, DispatchStatus.FAILURE)
    now = time.time()
    record = claimed.model_copy(
        update={
            "status": status,
            "dispatched_session_id": session_id or claimed.dispatched_session_id,
            "result_summary": end.summary,
            "outputs": dict(outputs) if status is DispatchStatus.SUCCESS else {},
            "usage": usage,
            "error": None if status is DispatchStatus.SUCCESS else end.reason,
            "started_at": claimed.started_at or (now if session_id else None),
            "finished_at": now,
            "updated_at": now,
        }
    )
    return encodable_copy(record)


def _step_captures(store: CampaignStore, campaign_id: str, name: str) -> dict[str, str]:
    outputs: dict[str, str] = {}
    for execution in store.list_steps(campaign_id, name):
        outputs.update(execution.captures)
    return outputs


class JobLifecycle:
    """Claims and launches the jobs of one process, at most ``max_concurrent`` launches at a time."""

    def __init__(self, store: CampaignStore, *, max_concurrent: int, end_retry: EndRetry | None = None) -> None:
        """``end_retry``: how often and how far apart an end is written again to a store that is unavailable."""
        self.store = store
        self._slots = anyio.Semaphore(max_concurrent)
        self._end_retry = end_retry or EndRetry()

    async def completed(self, campaign_id: str, name: str) -> DispatchRecord | None:
        """The job's recorded success, or None; a store that cannot be read counts as no success."""
        return await anyio.to_thread.run_sync(self.store.find_completed_dispatch, campaign_id, name)

    async def claim(
        self,
        campaign_id: str,
        name: str,
        *,
        recipe: str,
        inputs: Mapping[str, str],
        caller_session_id: str | None,
        force: bool,
        replays_steps: bool,
        on_launch: OnLaunchHook | None = None,
    ) -> ClaimedJob:
        """Claim the job for this process. A launch of a job that replays its recorded steps (a pipeline)
        first forgets them when they must not be replayed (see ``steps_to_forget``).

        Raises ClaimRefused when the claim cannot be written: a launch nobody recorded would be repeated.
        """
        previous = await anyio.to_thread.run_sync(self.store.get, campaign_id, name)
        claim = await anyio.to_thread.run_sync(
            functools.partial(
                self.store.claim,
                campaign_id,
                name,
                recipe=recipe,
                inputs=dict(inputs),
                caller_session_id=caller_session_id,
                owner=Owner.current(self.store.host),
                force=force,
                on_launch=on_launch,
            )
        )
        claimed = ClaimedJob(claim)
        if claim.action is not ClaimAction.LAUNCH or not replays_steps:
            return claimed
        why = steps_to_forget(previous, inputs, forced=force)
        if why is None:
            return claimed
        try:
            cleared = await anyio.to_thread.run_sync(self.store.clear_steps, campaign_id, name)
        except BaseException as exc:
            await self._record_end(claimed, ended_by(exc))
            raise
        logger.info("%s/%s: forgot %d recorded step executions: %s", campaign_id, name, cleared, why)
        return ClaimedJob(claim, forgotten_steps=cleared, forgotten_because=why)

    async def launch(
        self,
        claimed: ClaimedJob,
        attempt_body: AttemptBody,
        *,
        stopped: Callable[[BaseException], JobEnd] = ended_by,
        owner: Owner | None = None,
    ) -> RecordedEnd:
        """Run the claimed attempt within this process's concurrency limit and record its end.

        ``attempt_body(mark_running)`` prepares the attempt, awaits ``mark_running(session_id)`` right
        before its session starts, and returns how the attempt ended. The end is recorded whatever
        happens, waiting for a slot included: what the body returns, or, when anything raises, what
        ``stopped`` makes of the exception (which is then re-raised). ``owner``: the process taking the
        record over from its claimer as the attempt starts (a queue worker). Recording is shielded, so a process
        stopping at that moment does not leave the job ``pending`` or ``running``; a store that fails then
        does not turn a finished attempt into an error: the returned ``RecordedEnd`` says what was kept.
        """
        record = claimed.record
        campaign_id, name, attempt = record.campaign_id, record.name, claimed.claim.attempt
        session_id: str | None = None

        async def mark_running(
            started_session_id: str, *, worktree: str | None = None, branch: str | None = None
        ) -> None:
            nonlocal session_id
            take = functools.partial(
                self.store.mark_running,
                campaign_id,
                name,
                attempt=attempt,
                dispatched_session_id=started_session_id,
                owner=owner,
                worktree=worktree,
                branch=branch,
            )
            try:
                await anyio.to_thread.run_sync(take)
            except IllegalTransition as exc:
                raise FencedOut(str(exc)) from exc
            session_id = started_session_id

        try:
            async with self._slots:
                end = await attempt_body(mark_running)
        except FencedOut:
            raise  # the record is another launcher's: its end is theirs to write
        except BaseException as exc:
            await self._record_end(claimed, stopped(exc), session_id)
            raise
        return await self._record_end(claimed, end, session_id)

    async def _record_end(self, claimed: ClaimedJob, end: JobEnd, session_id: str | None = None) -> RecordedEnd:
        record = claimed.record
        job = f"{record.campaign_id}/{record.name}"
        write = functools.partial(record_job_end, self.store, record, end, session_id=session_id, retry=self._end_retry)
        recorded: RecordedEnd | None = None
        with anyio.CancelScope(shield=True):
            try:
                final, restored = await anyio.to_thread.run_sync(write)
            except Exception as exc:  # whatever the store did, the attempt ended: say so, do not raise it as ours
                logger.error("%s: the end of attempt %d could not be recorded", job, record.attempts, exc_info=exc)
                kept = _ended_record(record, end, session_id=session_id, outputs=end.outputs or {}, usage=None)
                why = f"the end of {job} attempt {record.attempts} could not be recorded: {exc}"
                recorded = RecordedEnd(kept, error=why)
            else:
                if restored:
                    logger.warning("%s: its record was written again, whole, with its end", job)
                recorded = RecordedEnd(final, restored=restored)
        assert recorded is not None, "a shielded scope is never cancelled"
        return recorded
