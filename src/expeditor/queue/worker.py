"""``expeditor worker``: one process per host, running queued dispatches in its slots.

A procrastinate worker (concurrency = slots, its own signal handling off) inside this host's runtime: the same
store, containment, executor, watchers, markers, registry and supervisor as a server, opened the same way
(``open_runtime``, which first reaps what a killed predecessor on this host left). Liveness has one clock: the
owner lease (``lease_interval``, ``lease_ttl``) is also procrastinate's heartbeat and stalled-worker timeout.

A job (``WorkerHost.run_job``) reads its dispatch record. Unless it is ``pending`` (the same dispatch), the
job ends "fenced out": logged, counted, nothing runs. Otherwise the worker checks ``cwd`` here (missing: the
attempt is a ``failure`` naming this host and the path) and runs the attempt through ``dispatch.run_attempt``,
taking the record over from its claimer as the session starts; of two jobs racing for one attempt the second is
refused there and ends fenced out.

SIGINT/SIGTERM: stop fetching, kill every session within ``shutdown_grace`` (the server's shutdown path), record
each attempt ``interrupted`` and queue it again at once (a new pending attempt and a new job: procrastinate
would not retry the old one), give the lease up, exit. SIGKILL: the sessions die as under a killed server.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
from pathlib import Path
from typing import Any, TextIO

import anyio
from procrastinate import App
from procrastinate.worker import Worker

from expeditor.config import Settings
from expeditor.dispatch import run_attempt
from expeditor.errors import IllegalTransition, InvalidInput, StaleAttempt, StoreUnavailable
from expeditor.executor import RunControl
from expeditor.queue import require_queue
from expeditor.queue.app import check_queue_schema, open_app
from expeditor.queue.fencing import SelfFence, fence_budget
from expeditor.queue.recovery import keep_recovering
from expeditor.queue.tasks import RUNNER_KEY, defer_in_claim
from expeditor.queue.transcripts import TranscriptKeeping
from expeditor.recipes import Orchestrator, RecipeError, RecipeLibrary
from expeditor.runs import CallerContext, ClaimedJob, FencedOut, Runtime, open_runtime
from expeditor.state import Claim, ClaimAction, DispatchRecord, DispatchStatus, Owner
from expeditor.state.postgres import PostgresCampaignStore

__all__ = ["WorkerHost", "worker_command"]

logger = logging.getLogger(__name__)

# Connections beyond one per slot: procrastinate's listener, heartbeat and fetcher, and stall recovery.
_SPARE_CONNECTIONS = 4
# Beyond shutdown_grace and kill_grace, how long procrastinate waits for this worker's jobs to record their end.
_JOB_END_BOUND = 5.0


class WorkerHost:
    """This host's side of the queue: runs the jobs procrastinate hands it, and stops them when told."""

    def __init__(
        self,
        runtime: Runtime,
        store: PostgresCampaignStore,
        *,
        queue: str,
        transcripts: TranscriptKeeping | None = None,
    ) -> None:
        self.runtime = runtime
        self.transcripts = transcripts
        self.settings = runtime.settings
        self.store = store
        self.queue = queue
        self.host = store.host
        self.me = Owner.current(store.host)
        self.library = RecipeLibrary.from_settings(runtime.settings)
        self.fenced_out = 0
        self.stopping: str | None = None
        self.cut_reason: str | None = None  # set while cut off from the store (``fencing``)
        self._last_cut: str | None = None
        self.cuts = 0
        self._reachable = anyio.Event()  # set when the store answers again after a cut, or the worker stops
        self._worker: Worker | None = None

    # --- jobs ---------------------------------------------------------------------------------------------

    async def run_job(self, job_id: int, campaign: str, name: str, dispatch_id: str) -> str:
        """Run the pending attempt of ``campaign/name`` (the dispatch ``dispatch_id``), or nothing; what happened."""
        job = f"{campaign}/{name}"
        record = await anyio.to_thread.run_sync(self.store.get, campaign, name)
        if record is None or record.dispatch_id != dispatch_id or record.status is not DispatchStatus.PENDING:
            state = "no record" if record is None else f"attempt {record.attempts} {record.status}"
            if record is not None and record.dispatch_id != dispatch_id:
                state = f"another dispatch of that name ({record.dispatch_id})"
            return self._fenced(job_id, job, f"its record has {state}, not a pending attempt of {dispatch_id}")
        if self.stopping is not None or self.cut_reason is not None:
            # Fetched as this worker began to stop, or while cut off: left pending for the reconciler.
            return f"{job}: not started, {self.stopping or self.cut_reason}"
        try:
            recipe = self.library.load(record.recipe)
            work_dir = self.runtime.executor.checked_cwd(Path(record.cwd or self.settings.allowed_roots[0]))
        except (InvalidInput, RecipeError) as exc:
            return await self._refused(job_id, record, f"on host {self.host}: {exc}")
        claim = Claim(
            action=ClaimAction.LAUNCH,
            record=record,
            previous_status=DispatchStatus.PENDING,
            inputs_changed=False,
            reason=f"job {job_id} runs {job} attempt {record.attempts} on {self.host}",
        )
        caller = CallerContext(session_id=record.caller_session_id, kind=None)
        inputs = {key: str(value) for key, value in record.inputs.items()}
        cuts_before = self.cuts
        try:
            outcome = await run_attempt(
                self.runtime,
                ClaimedJob(claim),
                recipe,
                inputs,
                work_dir,
                caller,
                stale_threshold=record.stale_threshold,
                control=RunControl(),
                owner=self.me,
                interrupted_by=lambda: self.stopping or (self._last_cut if self.cuts != cuts_before else None),
                transcripts=self.transcripts,
                isolated=record.isolation == "worktree",
            )
        except FencedOut as exc:
            return self._fenced(job_id, job, str(exc))
        if outcome.status is DispatchStatus.INTERRUPTED and self.stopping is None and self.cuts != cuts_before:
            await self._after_cut(job_id, record, recipe.orchestrator)
        elif outcome.status is DispatchStatus.INTERRUPTED and self.stopping is not None:
            with anyio.CancelScope(shield=True):
                await self._queue_again(outcome.campaign_id, outcome.name, recipe.orchestrator)
        logger.info("job %d: %s", job_id, outcome.message)
        return outcome.message

    def _fenced(self, job_id: int, job: str, why: str) -> str:
        self.fenced_out += 1
        logger.warning("job %d for %s fenced out (%d on this worker): %s", job_id, job, self.fenced_out, why)
        return f"fenced out: {why}"

    async def _refused(self, job_id: int, record: DispatchRecord, why: str) -> str:
        """The attempt cannot run on this host: a ``failure`` saying why (not retried), unless it moved on."""
        mark = functools.partial(
            self.store.mark_failed, record.campaign_id, record.name, attempt=record.attempts, error=why
        )
        job = f"{record.campaign_id}/{record.name}"
        try:
            await anyio.to_thread.run_sync(mark)
        except IllegalTransition as exc:  # the record moved on: it is no longer this job's to end
            return self._fenced(job_id, job, str(exc))
        except StoreUnavailable as exc:
            logger.error("job %d: %s; and its failure could not be recorded: %s", job_id, why, exc)
            return why
        logger.warning("job %d: %s attempt %d failed: %s", job_id, job, record.attempts, why)
        return why

    async def _after_cut(self, job_id: int, record: DispatchRecord, orchestrator: Orchestrator) -> None:
        """The attempt was killed because this worker was cut off from the store. The job stays ``doing`` until
        the store answers (its end and its next attempt need it; if that takes past ``lease_ttl``, another
        host's stall recovery takes the attempt over first). Then the attempt ends ``interrupted``, refused
        when another host took it over meanwhile, and is queued again unless it was."""
        await self._reachable.wait()
        campaign, name, attempt = record.campaign_id, record.name, record.attempts
        mark = functools.partial(
            self.store.mark_interrupted, campaign, name, attempt=attempt, reason=self._last_cut or "cut off"
        )
        try:
            await anyio.to_thread.run_sync(mark)
        except StaleAttempt as exc:
            logger.warning("job %d: this worker's late end of %s/%s was refused: %s", job_id, campaign, name, exc)
            return
        except IllegalTransition:
            pass  # its end was recorded already
        except StoreUnavailable as exc:
            logger.error("job %d: %s/%s attempt %d: its end was not recorded: %s", job_id, campaign, name, attempt, exc)
            return
        if self.stopping is None:
            with anyio.CancelScope(shield=True):
                await self._queue_again(campaign, name, orchestrator)

    async def _queue_again(self, campaign: str, name: str, orchestrator: Orchestrator) -> None:
        """After a stop interrupted the attempt: a new pending attempt, and a new job for the next free worker."""
        record = await anyio.to_thread.run_sync(self.store.get, campaign, name)
        if record is None or record.status is not DispatchStatus.INTERRUPTED:
            return
        try:
            claimed = await self.runtime.jobs.claim(
                campaign,
                name,
                recipe=record.recipe,
                inputs={key: str(value) for key, value in record.inputs.items()},
                caller_session_id=record.caller_session_id,
                force=False,
                replays_steps=orchestrator is Orchestrator.PIPELINE,
                on_launch=defer_in_claim(
                    queue=self.queue,
                    cwd=record.cwd or "",
                    stale_threshold=record.stale_threshold,
                    isolation=record.isolation,
                ),
            )
        except StoreUnavailable as exc:
            logger.error("%s/%s could not be queued again (stall recovery will): %s", campaign, name, exc)
            return
        logger.warning("%s/%s: %s", campaign, name, claimed.claim.reason)

    # --- running and stopping -----------------------------------------------------------------------------

    async def serve(self, app: App) -> None:
        """Fetch and run jobs until ``stop``; returns once every job of this worker ended."""
        settings = self.settings
        self._worker = Worker(
            app=app,
            queues=[self.queue],
            name=f"{self.host}:{self.me.pid}",
            concurrency=settings.max_concurrent_dispatches,
            install_signal_handlers=False,
            update_heartbeat_interval=settings.lease_interval,
            stalled_worker_timeout=settings.lease_ttl,
            shutdown_graceful_timeout=settings.shutdown_grace + settings.kill_grace + _JOB_END_BOUND,
            abort_job_polling_interval=max(settings.lease_interval, 0.5),
            # A job deferred while another job of its name still held the lock (a stop's re-queue) is fetched
            # only by this poll, as no notification comes when the lock is freed.
            fetch_job_polling_interval=settings.stall_check_interval,
            additional_context={RUNNER_KEY: self},
        )
        if self.stopping is not None:  # told to stop while starting: nothing to fetch
            return
        await self._worker.run()

    def stop(self, reason: str) -> None:
        """Stop fetching, and kill every session within ``shutdown_grace``; their jobs record ``interrupted``."""
        if self.stopping is not None:
            return
        self.stopping = reason
        self._reachable.set()  # a job held by a cut ends now
        if self._worker is not None:
            self._worker.stop()
        self.runtime.supervisor.cancel_all(reason, grace=self.settings.shutdown_grace)

    async def cut_off(self, reason: str) -> None:
        """The self-fence's cut (``fencing``): kill every live session with ``reason`` within ``shutdown_grace``,
        start no job until ``restored``; the killed attempts end ``interrupted``."""
        self.cut_reason = self._last_cut = reason
        self.cuts += 1
        self._reachable = anyio.Event()
        supervisor = self.runtime.supervisor
        for session_id in list(supervisor.live):
            supervisor.cancel(session_id, reason, grace=self.settings.shutdown_grace)

    async def restored(self) -> None:
        """The store answers again: jobs may start, and the attempts killed by the cut are settled."""
        self.cut_reason = None
        self._reachable.set()


async def _watch_signals(host: WorkerHost) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            host.stop(f"the worker on {host.host} received {signal.Signals(signum).name} and stopped the session")


async def run_worker(settings: Settings, *, queue: str, ready: TextIO | None = None) -> WorkerHost:
    """Run this host's worker until SIGINT/SIGTERM; returns it once stopped (every job ended)."""
    async with open_runtime(
        settings, owner_kind="worker", closing_reason="the expeditor worker is stopping"
    ) as runtime:
        store = runtime.store
        if not isinstance(store, PostgresCampaignStore):
            raise InvalidInput("expeditor worker needs a PostgreSQL store_url")
        with contextlib.closing(TranscriptKeeping.of(settings)) as transcripts:
            host = WorkerHost(runtime, store, queue=queue, transcripts=transcripts)
            await anyio.to_thread.run_sync(store.announce_slots, settings.max_concurrent_dispatches)
            connections = settings.max_concurrent_dispatches + _SPARE_CONNECTIONS
            async with (
                open_app(settings, queue=queue, connections=connections) as app,
                anyio.create_task_group() as tasks,
            ):
                tasks.start_soon(_watch_signals, host)
                tasks.start_soon(_keep_recovering, app, store, settings, host.me)
                fence = SelfFence(
                    last_renewal=lambda: store.last_lease_renewal,
                    lease_interval=settings.lease_interval,
                    lease_ttl=settings.lease_ttl,
                    cut_off=host.cut_off,
                    restored=host.restored,
                    worker=f"the worker on {host.host}",
                )
                tasks.start_soon(fence.run)
                logger.info(
                    "worker %s ready: %d slots on queue %s, store %s",
                    host.host,
                    settings.max_concurrent_dispatches,
                    queue,
                    store.server,
                )
                if ready is not None:
                    ready.write(f"expeditor worker {host.host} ready: {settings.max_concurrent_dispatches} slots\n")
                    ready.flush()
                await host.serve(app)
                tasks.cancel_scope.cancel()
        return host


async def _keep_recovering(app: App, store: PostgresCampaignStore, settings: Settings, me: Owner) -> None:
    await keep_recovering(app, store, settings, me=me)


def worker_command(settings: Settings, *, queue: str | None, err: TextIO) -> int:
    """``expeditor worker``: refuse at once what cannot work (one line), else run until stopped; 0."""
    require_queue(settings, what="expeditor worker")
    fence_budget(settings.lease_interval, settings.lease_ttl)  # a lease too short to fence in time: refused now
    check_queue_schema(settings)
    chosen = queue or settings.dispatch_queue

    async def main() -> Any:
        return await run_worker(settings, queue=chosen, ready=err)

    host: WorkerHost = anyio.run(main, backend="asyncio")
    logger.info("worker %s stopped (%d jobs fenced out)", host.host, host.fenced_out)
    return 0
