"""Stall recovery: a job whose worker went silent runs again elsewhere, once; a pending record without a job gets one.

procrastinate notices a silent worker (its heartbeat stops) but retries nothing by itself. Every worker
runs ``keep_recovering``; each round one of them at a time (the first to take a transaction-scoped advisory
lock) looks at every ``run_dispatch`` job still ``doing`` under a worker silent for ``lease_ttl``, and does
what its dispatch record, read in the round's transaction, says:

- ``running``: a claim on behalf of the recovering worker. By the shared rules (``state.claims``) it
  interrupts the attempt only if its owner's lease expired by the database's clock, closes the runs that
  owner left running and sets a new pending attempt (resuming the session), with a new job deferred in the
  claim's transaction exactly as a dispatcher's claim defers one; the next free worker fences onto that
  attempt. An owner whose lease is alive keeps its job. A record that moved between the read and the claim
  (it ended, or someone else took it over) rolls the claim back: an ended attempt is not relaunched here.
- ``pending`` (its worker died before taking the record), final (it died between recording the end and
  finishing the job), or no record: nothing more runs under that job.

A stalled job acted on is finished (in the take-over's own transaction, so that workers woken by the new
job find its lock free), never put back under its own id with ``retry_job``: a worker that was cut off
rather than dead finishes its job by id when the database returns, and procrastinate would let that late
``finish_job`` end the job another worker runs by then (releasing its lock, defeating its abort). A fresh
job per recovery keeps every worker's view of its own job true.

The reconciler, in the same round, defers a fresh job for every ``pending`` queue record that no waiting
or running job serves: a stalled job just finished, a job row deleted, a database restored from before
the job existed. It defers on the round's own transaction (the records taken ``FOR UPDATE SKIP LOCKED``),
so a record a dispatcher or a worker is writing is left for the next round.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, LiteralString, cast

import anyio
import anyio.to_thread
import psycopg
from procrastinate import App, PsycopgConnector
from procrastinate.exceptions import AlreadyEnqueued, ConnectorException
from procrastinate.jobs import Job, Status
from procrastinate.sql import queries
from procrastinate.sync_psycopg_connector import SyncPsycopgConnector
from psycopg.rows import dict_row

from expeditor.config import Settings
from expeditor.errors import StoreUnavailable
from expeditor.queue.tasks import DISPATCH_LOCK_PREFIX, RUN_DISPATCH, defer_in_claim, dispatch_job_lock, dispatch_of_job
from expeditor.state.models import Claim, ClaimAction, DispatchRecord, DispatchStatus, Owner
from expeditor.state.pg_rows import PgConnection, dispatch_from_row
from expeditor.state.postgres import PostgresCampaignStore

__all__ = ["RecoveryRound", "keep_recovering", "recover_once"]

logger = logging.getLogger(__name__)

Cursor = psycopg.AsyncCursor[dict[str, Any]]

# pg_try_advisory_xact_lock(class, key): the class says "expeditor" (as the migrations' lock), the key this job.
LOCK_CLASS = 0x45585044
_LOCK: LiteralString = "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s)) AS taken"
_RECORD: LiteralString = "SELECT * FROM dispatches WHERE campaign_id = %s AND name = %s"
_SILENCE: LiteralString = (
    "SELECT extract(epoch FROM now()) - (lease_expires_at - %s) AS silent FROM owners "
    "WHERE host = %s AND pid = %s AND start_time = %s"
)
_UNSERVED: LiteralString = """
    SELECT d.campaign_id, d.name, d.dispatch_id, d.attempts, d.queue_job_id, old.queue_name
      FROM dispatches d LEFT JOIN procrastinate_jobs old ON old.id = d.queue_job_id
     WHERE d.status = 'pending' AND d.queue_job_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j
                        WHERE j.lock = %s || d.campaign_id || '/' || d.name AND j.status IN ('todo', 'doing'))
       FOR UPDATE OF d SKIP LOCKED
"""
_POINT_AT_JOB: LiteralString = "UPDATE dispatches SET queue_job_id = %s WHERE campaign_id = %s AND name = %s"
# Never opened: runs procrastinate's own statements on a connection of ours (inside our transaction).
_STATEMENTS = SyncPsycopgConnector()
_WAITING_JOB: LiteralString = "SELECT id FROM procrastinate_jobs WHERE queueing_lock = %s AND status = 'todo'"


def recovery_lock_key(settings: Settings) -> str:
    """The advisory lock's key text: one recoverer per store schema."""
    return f"{settings.store_schema} stall recovery"


@dataclass
class RecoveryRound:
    """What one round did, job by job (``campaign/name``); ``skipped``: another worker held the lock."""

    skipped: bool = False
    taken_over: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    redeferred: list[str] = field(default_factory=list)


class _Moved(Exception):
    """The record changed between the read and the claim: this round leaves it (rolls the claim back)."""


async def keep_recovering(app: App, store: PostgresCampaignStore, settings: Settings, *, me: Owner) -> None:
    """A recovery round every ``stall_check_interval`` until cancelled; a round the store refuses is logged."""
    failing = False
    while True:
        began = anyio.current_time()
        try:
            await recover_once(app, store, settings, me=me)
        except (psycopg.Error, ConnectorException, StoreUnavailable) as exc:
            if not failing:  # once per outage, not every round
                text = str(exc).strip().splitlines() or [type(exc).__name__]
                logger.warning("stall recovery skips its rounds until the store answers: %s", text[0])
            failing = True
        else:
            if failing:
                logger.warning("stall recovery runs again")
            failing = False
        await anyio.sleep_until(began + settings.stall_check_interval)


async def recover_once(app: App, store: PostgresCampaignStore, settings: Settings, *, me: Owner) -> RecoveryRound:
    """One round: stalled jobs, then unserved pending records, under the recovery lock (or nothing)."""
    done = RecoveryRound()
    pool = cast("PsycopgConnector", app.connector).pool
    async with pool.connection() as connection, connection.transaction():
        cursor = connection.cursor(row_factory=dict_row)
        taken = await (await cursor.execute(_LOCK, (LOCK_CLASS, recovery_lock_key(settings)))).fetchone()
        if not taken or not taken["taken"]:
            done.skipped = True
            return done
        stalled = await app.job_manager.get_stalled_jobs(
            seconds_since_heartbeat=settings.lease_ttl, task_name=RUN_DISPATCH
        )
        for job in stalled:
            await _recover_job(app, store, cursor, job, settings, me, done)
        await _reconcile(app, cursor, settings, done)
    return done


async def _recover_job(
    app: App, store: PostgresCampaignStore, cursor: Cursor, job: Job, settings: Settings, me: Owner, done: RecoveryRound
) -> None:
    campaign, name = dispatch_of_job(job)
    label = f"{campaign}/{name}"
    row = await (await cursor.execute(_RECORD, (campaign, name))).fetchone()
    record = None if row is None else dispatch_from_row(row)
    if record is not None and record.status is DispatchStatus.RUNNING:
        silent = await _silence(cursor, record, settings.lease_ttl)
        try:
            claim = await anyio.to_thread.run_sync(lambda: _take_over(store, record, job, me))
        except _Moved:
            done.left.append(label)
            return
        if claim.action is not ClaimAction.LAUNCH:
            logger.debug("stall recovery: %s: %s", label, claim.reason)
            done.left.append(label)
            return
        logger.warning(
            "stall recovery: %s attempt %d on %s was silent for %s: interrupted; attempt %d is queued",
            label,
            record.attempts,
            record.owner.host if record.owner else "an unknown host",
            "an unknown time (no lease)" if silent is None else f"{silent:.1f} s",
            claim.record.attempts,
        )
        done.taken_over.append(label)
        return
    state = "no record" if record is None else f"attempt {record.attempts} {record.status}"
    logger.info("stall recovery: %s (%s): its stalled job %s is finished", label, state, job.id)
    done.finished.append(label)
    succeeded = record is not None and record.status is DispatchStatus.SUCCESS
    await app.job_manager.finish_job_by_id_async(
        job_id=_job_id(job), status=Status.SUCCEEDED if succeeded else Status.FAILED, delete_job=False
    )


def _take_over(store: PostgresCampaignStore, record: DispatchRecord, job: Job, me: Owner) -> Claim:
    """The claim that interrupts ``record``'s attempt if its owner is dead: in its transaction the next attempt's
    job is deferred and the stalled one finished, so workers woken by the new job find its lock free."""
    defer = defer_in_claim(
        queue=job.queue, cwd=record.cwd or "", stale_threshold=record.stale_threshold, isolation=record.isolation
    )

    def still_stalled(connection: PgConnection, claim: Claim) -> None:
        moved = claim.previous_status is not DispatchStatus.RUNNING or claim.record.attempts != record.attempts + 1
        if moved:
            raise _Moved(claim.reason)
        defer(connection, claim)
        _STATEMENTS.execute_query_one_with_connection(
            cast("psycopg.Connection[Any]", connection),
            queries["finish_job"],
            job_id=_job_id(job),
            status=Status.FAILED.value,
            delete_job=False,
        )

    return store.claim(
        record.campaign_id,
        record.name,
        recipe=record.recipe,
        inputs=record.inputs,
        caller_session_id=record.caller_session_id,
        owner=me,
        on_launch=still_stalled,
    )


async def _silence(cursor: Cursor, record: DispatchRecord, ttl: float) -> float | None:
    """How long ``record``'s owner has not renewed its lease, by the database's clock (None: no lease row)."""
    owner = record.owner
    if owner is None:
        return None
    row = await (await cursor.execute(_SILENCE, (ttl, owner.host, owner.pid, owner.start_time))).fetchone()
    return None if row is None else float(row["silent"])


def _job_id(job: Job) -> int:
    assert job.id is not None, "a job read from the queue has its id"
    return job.id


async def _reconcile(app: App, cursor: Cursor, settings: Settings, done: RecoveryRound) -> None:
    """Defer a fresh job for every pending queue record no waiting or running job serves, in the round's transaction."""
    connection = cursor.connection
    rows = await (await cursor.execute(_UNSERVED, (DISPATCH_LOCK_PREFIX,))).fetchall()
    for row in rows:
        campaign, name = str(row["campaign_id"]), str(row["name"])
        lock = dispatch_job_lock(campaign, name)
        queue = str(row["queue_name"] or settings.dispatch_queue)  # the old job's queue, when its row is left
        deferrer = app.tasks[RUN_DISPATCH].configure(connection=connection, lock=lock, queueing_lock=lock, queue=queue)
        job_id: int | None
        try:
            async with connection.transaction():  # a savepoint: AlreadyEnqueued must not abort the round
                job_id = await deferrer.defer_async(campaign=campaign, name=name, dispatch_id=row["dispatch_id"])
        except AlreadyEnqueued:  # deferred by someone else since the query: that job serves it
            waiting = await (await cursor.execute(_WAITING_JOB, (lock,))).fetchone()
            job_id = None if waiting is None else int(waiting["id"])
        if job_id is None:
            continue
        await cursor.execute(_POINT_AT_JOB, (job_id, campaign, name))
        logger.warning(
            "stall recovery: %s attempt %s was pending with no job to run it (job %s is gone or ended): job %d",
            f"{campaign}/{name}",
            row["attempts"],
            row["queue_job_id"],
            job_id,
        )
        done.redeferred.append(f"{campaign}/{name}")
