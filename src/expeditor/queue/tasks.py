"""The queue's one task, ``run_dispatch``: run whatever attempt of a dispatch is pending when the job starts.

Its arguments name the dispatch (campaign, name, dispatch_id), never the attempt: the attempt is read
from the record when the job starts, and taking it is fenced (``mark_running`` is legal once per attempt),
so a retried or duplicated job runs the latest pending attempt or nothing. Jobs of one name share
procrastinate's ``lock`` and ``queueing_lock`` (``dispatch_job_lock``): one waits at a time and one runs at
a time, a second guard behind the record's fence.

A job is deferred inside the claim's transaction (``defer_in_claim``), on the store's own connection, so the
claim and its job commit together or not at all.
"""

from __future__ import annotations

import logging
from typing import Any, LiteralString, Protocol, cast

from procrastinate import App, JobContext
from procrastinate import tasks as procrastinate_tasks
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.jobs import Job
from procrastinate.manager import JobManager
from procrastinate.sync_psycopg_connector import SyncPsycopgConnector

from expeditor.state import Claim, OnLaunchHook

__all__ = [
    "DISPATCH_LOCK_PREFIX",
    "RUNNER_KEY",
    "RUN_DISPATCH",
    "JobRunner",
    "defer_in_claim",
    "dispatch_job_lock",
    "dispatch_of_job",
    "register_tasks",
]

logger = logging.getLogger(__name__)

RUN_DISPATCH = "expeditor.run_dispatch"
RUNNER_KEY = "expeditor_runner"  # where a worker puts its JobRunner in the jobs' additional context
DISPATCH_LOCK_PREFIX = ""  # the lock is "campaign/name" itself: SQL building one writes prefix || c || '/' || n

_WAITING_JOB: LiteralString = "SELECT id FROM procrastinate_jobs WHERE queueing_lock = %s AND status = 'todo'"
_ON_RECORD: LiteralString = (
    "UPDATE dispatches SET queue_job_id = %s, cwd = %s, stale_threshold = %s, isolation = %s "
    "WHERE campaign_id = %s AND name = %s"
)


class JobRunner(Protocol):
    """What runs a job's attempt on a worker (``expeditor.queue.worker``)."""

    async def run_job(self, job_id: int, campaign: str, name: str, dispatch_id: str) -> str: ...


def dispatch_job_lock(campaign: str, name: str) -> str:
    return f"{DISPATCH_LOCK_PREFIX}{campaign}/{name}"


def dispatch_of_job(job: Job) -> tuple[str, str]:
    """The (campaign, name) a ``run_dispatch`` job runs."""
    arguments = job.task_kwargs
    return str(arguments["campaign"]), str(arguments["name"])


async def run_dispatch(context: JobContext, campaign: str, name: str, dispatch_id: str) -> str:
    runner = cast(JobRunner, context.additional_context[RUNNER_KEY])
    assert context.job.id is not None, "a fetched job has its id"
    return await runner.run_job(context.job.id, campaign, name, dispatch_id)


def register_tasks(app: App, *, queue: str) -> None:
    """Register ``run_dispatch`` on ``app``, deferred to ``queue`` by default."""
    app.task(name=RUN_DISPATCH, pass_context=True, queue=queue)(run_dispatch)


def defer_in_claim(
    *, queue: str, cwd: str, stale_threshold: float | None, isolation: str | None = None
) -> OnLaunchHook:
    """The claim's ``on_launch`` hook: defer the job on the claim's connection, in a savepoint of its transaction.

    ``AlreadyEnqueued``: a job for this name waits already and will run the pending attempt, so the claim
    commits without a second one. Either way the record carries the job's id and where the attempt runs.
    """
    # A connector never opened: the job is inserted on the claim's connection, never on a pool of its own.
    manager = JobManager(connector=SyncPsycopgConnector())

    def hook(connection: Any, claim: Claim) -> None:
        record = claim.record
        lock = dispatch_job_lock(record.campaign_id, record.name)
        deferrer = procrastinate_tasks.configure_task(
            name=RUN_DISPATCH, job_manager=manager, lock=lock, queueing_lock=lock, queue=queue, connection=connection
        )
        job_id: int | None
        try:
            with connection.transaction():  # AlreadyEnqueued must not abort the claim's transaction
                job_id = deferrer.defer(campaign=record.campaign_id, name=record.name, dispatch_id=record.dispatch_id)
        except AlreadyEnqueued:
            waiting = connection.execute(_WAITING_JOB, (lock,)).fetchone()
            job_id = None if waiting is None else int(waiting["id"])
            logger.info("%s: a job for it waits already (%s); it runs attempt %d", lock, job_id, record.attempts)
        connection.execute(_ON_RECORD, (job_id, cwd, stale_threshold, isolation, record.campaign_id, record.name))

    return hook
