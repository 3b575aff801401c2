"""Cancel across hosts: a dispatched job is stopped wherever it runs, or before it runs (issue 27, item 6).

A session this process runs is cancelled by its own supervisor, as on one machine; that part stays with
the caller (``cancel_session``). What this module adds is the job of another host, by the record:

- **waiting** (record ``pending``): the canceller records ``cancelled`` for that attempt *first*, then
  cancels the job (``todo`` becomes ``cancelled``). A worker that fetched the job meanwhile finds the
  record no longer pending and ends fenced out; the abort reaches it too. Nothing is launched.
- **running**: the canceller asks the queue to abort the job (``cancel_job_by_id(…, abort=True)``); the
  worker running it hears it at once (LISTEN/NOTIFY), its job's task is cancelled, which kills the session's
  tree through the supervisor (markers removed, registry entry gone), and the worker records ``cancelled``.
  The canceller waits (bounded) for that record and says how it stands.
- anything else of another host (a local dispatch's session, a ``run_skill`` run) is refused, naming the
  host and the owner that can cancel it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

import anyio

from expeditor.config import Settings
from expeditor.errors import IllegalTransition, InvalidInput, StaleAttempt, Unusable
from expeditor.state import CampaignStore, DispatchRecord, DispatchStatus, RunRecord, RunStatus, open_store

__all__ = [
    "AbortJob",
    "CancelOutcome",
    "cancel_command",
    "cancel_dispatch",
    "queue_aborter",
    "queued_dispatch_of",
    "refusal_for",
]

logger = logging.getLogger(__name__)

AbortJob = Callable[[int], Awaitable[bool]]
"""``abort_job(job_id)``: the queue's ``cancel_job_by_id_async(job_id, abort=True)``."""

_LIVE = (DispatchStatus.PENDING, DispatchStatus.RUNNING)
EXIT_NOT_CANCELLED = 1


@dataclass(frozen=True)
class CancelOutcome:
    """What a cancel did: the record as it stands after it, and one sentence."""

    cancelled: bool
    message: str
    record: DispatchRecord | None = None


async def cancel_dispatch(
    store: CampaignStore,
    abort_job: AbortJob,
    campaign: str,
    name: str,
    *,
    reason: str,
    wait: float,
    poll: float = 0.05,
) -> CancelOutcome:
    """Cancel the job ``campaign/name`` wherever it is queued or runs; waits up to ``wait`` s for a running one.

    Raises Unusable when there is nothing to cancel (no such job, not live, or not a queued dispatch).
    """
    record = await anyio.to_thread.run_sync(store.get, campaign, name)
    if record is None:
        raise Unusable(f"no dispatch {campaign}/{name} in the store: check the campaign and job names")
    if record.status not in _LIVE:
        raise Unusable(f"{campaign}/{name} is not running: it is {record.status.value} (attempt {record.attempts})")
    if record.queue_job_id is None:
        owner = record.owner.describe() if record.owner else "an unknown process"
        raise Unusable(
            f"{campaign}/{name} runs on host {record.owner.host if record.owner else '?'} without the queue "
            f"(owned by {owner}): cancel its session {record.dispatched_session_id} through that process"
        )
    if record.status is DispatchStatus.PENDING:
        waiting, job_id = record.attempts, record.queue_job_id
        try:
            cancelled = await anyio.to_thread.run_sync(
                lambda: store.mark_cancelled(campaign, name, attempt=waiting, reason=reason)
            )
        except (IllegalTransition, StaleAttempt):
            cancelled = None  # a worker took it (or a new attempt began) meanwhile: abort whatever runs now
        if cancelled is not None:
            await abort_job(job_id)
            return CancelOutcome(
                True,
                f"{campaign}/{name} was waiting for a worker: its job is cancelled and will not run "
                f"(attempt {record.attempts} recorded cancelled)",
                cancelled,
            )
        record = await anyio.to_thread.run_sync(store.get, campaign, name) or record
        if record.queue_job_id is None or record.status not in _LIVE:
            return CancelOutcome(False, f"{campaign}/{name} ended meanwhile: it is {record.status.value}", record)
    return await _abort_running(store, abort_job, record, wait=wait, poll=poll)


async def _abort_running(
    store: CampaignStore, abort_job: AbortJob, record: DispatchRecord, *, wait: float, poll: float
) -> CancelOutcome:
    campaign, name, attempt = record.campaign_id, record.name, record.attempts
    host = record.owner.host if record.owner else "?"
    assert record.queue_job_id is not None
    if not await abort_job(record.queue_job_id):
        logger.warning("%s/%s: its job %d was neither waiting nor running", campaign, name, record.queue_job_id)
    deadline = time.monotonic() + wait
    while True:
        now = await anyio.to_thread.run_sync(store.get, campaign, name)
        if now is None or now.attempts != attempt or now.status not in _LIVE:
            break
        if time.monotonic() >= deadline:
            return CancelOutcome(
                True,
                f"{campaign}/{name}: its worker on host {host} was told to stop it; it is still "
                f"{now.status.value} after {wait:g} s",
                now,
            )
        await anyio.sleep(poll)
    if now is None:
        return CancelOutcome(True, f"{campaign}/{name}: its job was aborted; its record is gone", None)
    stopped = now.status is DispatchStatus.CANCELLED and now.attempts == attempt
    verdict = "was stopped" if stopped else f"ended meanwhile: it is {now.status.value}"
    return CancelOutcome(stopped, f"{campaign}/{name} {verdict} on host {host} (attempt {now.attempts})", now)


async def queued_dispatch_of(store: CampaignStore, session_id: str) -> DispatchRecord | None:
    """The live queued dispatch whose latest attempt runs ``session_id`` (any host), or None."""
    run: RunRecord | None = await anyio.to_thread.run_sync(store.get_run, session_id)
    if run is None or run.campaign_id is None or run.job_name is None:
        return None
    record = await anyio.to_thread.run_sync(store.get, run.campaign_id, run.job_name)
    if (
        record is None
        or record.dispatched_session_id != session_id
        or record.queue_job_id is None
        or record.status not in _LIVE
    ):
        return None
    return record


async def refusal_for(store: CampaignStore, session_id: str) -> str | None:
    """Why a running session of another process cannot be cancelled from here (its host and owner), or None."""
    run: RunRecord | None = await anyio.to_thread.run_sync(store.get_run, session_id)
    if run is None or run.status is not RunStatus.RUNNING:
        return None
    return (
        f"session {session_id} ({run.kind.value}) runs on host {run.owner.host} under {run.owner.describe()}, not "
        "as a queued dispatch: only that process can cancel it"
    )


@contextlib.asynccontextmanager
async def queue_aborter(settings: Settings) -> AsyncGenerator[AbortJob]:
    """``abort_job`` through the queue, on a connection of its own for the block."""
    # The queue extra is optional: procrastinate is imported once a queued job is to be cancelled.
    from expeditor.queue.app import open_app

    async with open_app(settings, queue=settings.dispatch_queue, connections=1) as app:

        async def abort_job(job_id: int) -> bool:
            return await app.job_manager.cancel_job_by_id_async(job_id, abort=True)

        yield abort_job


def cancel_command(
    settings: Settings, campaign: str | None, name: str | None, *, session: str | None, out: TextIO
) -> int:
    """``expeditor cancel (CAMPAIGN NAME | --session ID)``: 0 once it is cancelled, 1 otherwise."""
    if session is not None and (campaign is not None or name is not None):
        raise InvalidInput("give CAMPAIGN NAME or --session ID, not both")
    if session is None and (campaign is None or name is None):
        raise InvalidInput("expected CAMPAIGN NAME (a dispatched job) or --session ID (its session)")
    if settings.store_url is None:
        raise Unusable(
            "expeditor cancel stops queued dispatches of a shared PostgreSQL store (store_url); with the SQLite "
            "store, cancel a session through the server that runs it (cancel_session)"
        )
    reason = f"cancelled by expeditor cancel on host {settings.host_name}"
    wait = settings.kill_grace + settings.store_timeout

    async def run() -> CancelOutcome:
        store = open_store(settings, owner_kind="cancel")
        try:
            if session is not None:
                record = await queued_dispatch_of(store, session)
                if record is None:
                    refusal = await refusal_for(store, session)
                    raise Unusable(refusal or f"no live dispatched session {session}: expeditor status shows them")
                job = (record.campaign_id, record.name)
            else:
                job = (campaign or "", name or "")
            async with queue_aborter(settings) as abort_job:
                return await cancel_dispatch(store, abort_job, *job, reason=reason, wait=wait)
        finally:
            store.close()

    outcome = anyio.run(run)
    out.write(outcome.message + "\n")
    return 0 if outcome.cancelled else EXIT_NOT_CANCELLED
