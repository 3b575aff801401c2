"""One job's life, however the job is run: claim → short-circuit | already running | launch → record the end.

A job is a (campaign, name) record in the store. ``dispatch`` launches it as a supervised
orchestrator or pipeline-runner session; ``expeditor recipe run`` runs its pipeline in-process.
Both go through ``JobLifecycle``: the claim half (``claim``) decides, atomically, whether this
caller launches; the launch half (``launch``) marks the attempt running, runs it within the
process's concurrency limit and records its end through ``record_job_end``, the one function that
writes a job's end, whatever stopped it. The two halves meet only in the store's ``Claim``, so
claiming in one process and launching in another is a cut between them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import anyio

from expeditor.errors import ExpeditorError
from expeditor.reports import campaign_runs, job_usage
from expeditor.state import (
    CampaignStore,
    Claim,
    ClaimAction,
    DispatchRecord,
    DispatchStatus,
    Owner,
    RunStatus,
    inputs_hash,
)

__all__ = [
    "AttemptBody",
    "ClaimedJob",
    "JobEnd",
    "JobLifecycle",
    "MarkRunning",
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


MarkRunning = Callable[[str], Awaitable[None]]
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


def record_job_end(store: CampaignStore, campaign_id: str, name: str, attempt: int, end: JobEnd) -> DispatchRecord:
    """Write the end of the job's attempt, with what the job cost: every session it ran, in every attempt,
    the run_skill calls of its orchestrators included. Fenced by ``attempt``."""
    usage = job_usage(campaign_runs(store, campaign_id, name))
    if end.status is RunStatus.SUCCESS:
        outputs = dict(end.outputs) if end.outputs is not None else _step_captures(store, campaign_id, name)
        return store.mark_succeeded(
            campaign_id, name, attempt=attempt, summary=end.summary, outputs=outputs, usage=usage
        )
    if end.status is RunStatus.CANCELLED:
        return store.mark_cancelled(campaign_id, name, attempt=attempt, reason=end.reason, usage=usage)
    return store.mark_failed(campaign_id, name, attempt=attempt, error=end.reason, summary=end.summary, usage=usage)


def _step_captures(store: CampaignStore, campaign_id: str, name: str) -> dict[str, str]:
    outputs: dict[str, str] = {}
    for execution in store.list_steps(campaign_id, name):
        outputs.update(execution.captures)
    return outputs


class JobLifecycle:
    """Claims and launches the jobs of one process, at most ``max_concurrent`` launches at a time."""

    def __init__(self, store: CampaignStore, *, max_concurrent: int) -> None:
        self.store = store
        self._slots = anyio.Semaphore(max_concurrent)

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
                owner=Owner.current(),
                force=force,
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
    ) -> DispatchRecord:
        """Run the claimed attempt within this process's concurrency limit and record its end.

        ``attempt_body(mark_running)`` prepares the attempt, awaits ``mark_running(session_id)`` right
        before its session starts, and returns how the attempt ended. The end is recorded whatever
        happens, waiting for a slot included: what the body returns, or, when anything raises, what
        ``stopped`` makes of the exception (which is then re-raised). Recording is shielded, so a process
        stopping at that moment does not leave the job ``pending`` or ``running``.
        """
        record = claimed.record
        campaign_id, name, attempt = record.campaign_id, record.name, claimed.claim.attempt

        async def mark_running(session_id: str) -> None:
            await anyio.to_thread.run_sync(
                functools.partial(
                    self.store.mark_running, campaign_id, name, attempt=attempt, dispatched_session_id=session_id
                )
            )

        try:
            async with self._slots:
                end = await attempt_body(mark_running)
        except BaseException as exc:
            await self._record_end(claimed, stopped(exc))
            raise
        return await self._record_end(claimed, end)

    async def _record_end(self, claimed: ClaimedJob, end: JobEnd) -> DispatchRecord:
        record = claimed.record
        final: DispatchRecord | None = None
        with anyio.CancelScope(shield=True):
            final = await anyio.to_thread.run_sync(
                functools.partial(
                    record_job_end, self.store, record.campaign_id, record.name, claimed.claim.attempt, end
                )
            )
        assert final is not None
        return final
