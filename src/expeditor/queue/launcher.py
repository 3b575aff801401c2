"""The queue launcher: a claimed dispatch runs on whichever worker has a free slot; this call waits for it.

The claim's hook defers ``run_dispatch`` in the claim's transaction (``tasks.defer_in_claim``), so the claim
and its job commit together. The call that claimed then waits: it holds the caller's ``dispatch`` marker (to
the dispatch deadline, as a local launch does), keeps the caller's progress fed from the record (status,
host, session, and whether any worker is alive to take the job), and returns when the record is final, woken
by the store's notification of a final transition or, failing that, a poll every ``_POLL`` seconds. At the
deadline it returns the record as it stands, saying so. The job is not this process's child: the process
stopping or dying does not stop it. The caller cancelling the call does: the job is aborted (a waiting one
is cancelled, and its record with it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import anyio
import psycopg
from procrastinate import App, PsycopgConnector

from expeditor.dispatch import DISPATCH_MARKER_LABEL, DispatchOutcome, PreparedJob
from expeditor.errors import InvalidInput, Unusable
from expeditor.executor import RunControl
from expeditor.monitor import execution_marker
from expeditor.queue import require_queue
from expeditor.queue.app import check_queue_schema, connection_options, open_app
from expeditor.queue.cancel import cancel_dispatch
from expeditor.queue.tasks import defer_in_claim
from expeditor.runs import CallerContext, ClaimedJob, Runtime
from expeditor.state import DispatchRecord, DispatchStatus, OnLaunchHook
from expeditor.state.opening import postgres_url
from expeditor.state.pg_schema import DISPATCH_FINAL_CHANNEL

__all__ = ["QueueLauncher", "open_queue_launcher"]

logger = logging.getLogger(__name__)

_POLL = 2.0  # seconds between reads of a waited-for record when no notification comes
_UNFINISHED = (DispatchStatus.PENDING, DispatchStatus.RUNNING)
_LIVE_WORKERS = (
    "SELECT count(*) AS n FROM owners WHERE kind = 'worker' AND lease_expires_at > extract(epoch FROM now())"
)


class _QuietListenerCancel(logging.Filter):
    """psycopg warns when a cancelled ``notifies()`` closes its connection; the listener is cancelled on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "query cancellation interrupted" not in record.getMessage()


logging.getLogger("psycopg").addFilter(_QuietListenerCancel())


class _Wakeups:
    """Events set when the store notifies that a dispatch reached its end, by dispatch id."""

    def __init__(self) -> None:
        self._events: dict[str, anyio.Event] = {}

    def event(self, dispatch_id: str) -> anyio.Event:
        return self._events.setdefault(dispatch_id, anyio.Event())

    def done_with(self, dispatch_id: str) -> None:
        self._events.pop(dispatch_id, None)

    def wake(self, dispatch_id: str) -> None:
        event = self._events.pop(dispatch_id, None)
        if event is not None:
            event.set()

    async def listen(self, url: str, options: dict[str, Any]) -> None:
        """Wake waiters on each notification, reconnecting after a failure (the poll covers the gap)."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    url, autocommit=True, connect_timeout=options["connect_timeout"], options=options["options"]
                ) as connection:
                    await connection.execute(f"LISTEN {DISPATCH_FINAL_CHANNEL}")
                    async for notification in connection.notifies():
                        self.wake(notification.payload)
            except psycopg.Error as exc:
                logger.warning("listening for ended dispatches failed (polling meanwhile): %s", exc)
            await anyio.sleep(_POLL)


class QueueLauncher:
    """Defers claimed jobs to the queue and waits for their records to end."""

    def __init__(self, runtime: Runtime, app: App, wakeups: _Wakeups, *, queue: str) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.app = app
        self.queue = queue
        self._wakeups = wakeups

    def checked_cwd(self, cwd: Path) -> Path:
        """Absolute and inside the allowed roots; whether it exists is for the worker's host to say."""
        path = Path(os.path.normpath(cwd.expanduser().absolute()))
        if not any(path == root or path.is_relative_to(root) for root in self.settings.allowed_roots):
            roots = ", ".join(str(root) for root in self.settings.allowed_roots)
            raise InvalidInput(
                f"cwd {path} is outside the allowed roots ({roots}): "
                "use a directory inside one of them or add it to EXPEDITOR_ALLOWED_ROOTS"
            )
        return path

    def claim_hook(self, job: PreparedJob) -> OnLaunchHook | None:
        return defer_in_claim(
            queue=self.queue,
            cwd=str(job.work_dir),
            stale_threshold=job.stale_threshold,
            isolation="worktree" if job.isolated else None,
        )

    async def launch(
        self, claimed: ClaimedJob, job: PreparedJob, caller: CallerContext, control: RunControl
    ) -> DispatchOutcome:
        record = claimed.record
        settings = self.settings
        expires_at = time.time() + settings.dispatch_timeout + settings.kill_grace
        marker = execution_marker(
            settings.markers_path,
            DISPATCH_MARKER_LABEL,
            caller.session_id,
            expires_at=expires_at,
            heartbeat_interval=settings.marker_heartbeat_interval,
        )
        try:
            async with marker:
                return await self._wait(record, control)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._abort(record)
            raise

    async def _wait(self, claimed: DispatchRecord, control: RunControl) -> DispatchOutcome:
        campaign, name = claimed.campaign_id, claimed.name
        deadline = time.monotonic() + self.settings.dispatch_timeout
        wait = min(_POLL, self.settings.progress_interval)
        current: DispatchRecord | None = claimed
        interrupted_since: float | None = None
        try:
            while True:
                woken = self._wakeups.event(claimed.dispatch_id)
                current = await anyio.to_thread.run_sync(self.runtime.store.get, campaign, name) or current
                assert current is not None
                if current.status is DispatchStatus.INTERRUPTED:
                    # A stopping worker records ``interrupted``, then queues the next attempt: follow the job
                    # there, unless nobody queues it within a lease's life (no notification: poll meanwhile).
                    interrupted_since = interrupted_since or time.monotonic()
                    now = time.monotonic()
                    if now - interrupted_since < self.settings.lease_ttl and now < deadline:
                        control.remote_activity = f"attempt {current.attempts} was interrupted: {current.error}"
                        await anyio.sleep(min(wait, deadline - now))
                        continue
                if current.status not in _UNFINISHED:
                    return _ended(current)
                interrupted_since = None
                control.remote_activity = await self._activity(current)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    limit = self.settings.dispatch_timeout
                    why = f"the dispatch deadline ({limit:g} s) passed while it was {current.status}"
                    return DispatchOutcome.of(current, f"{campaign}/{name}: {why}; it goes on", host=_host(current))
                with anyio.move_on_after(min(wait, remaining)):
                    await woken.wait()
        finally:
            self._wakeups.done_with(claimed.dispatch_id)

    async def _activity(self, record: DispatchRecord) -> str:
        """Where a waited-for job stands, for the caller's progress."""
        if record.status is DispatchStatus.RUNNING:
            return f"attempt {record.attempts} running on {_host(record)}, session {record.dispatched_session_id}"
        workers = await self._live_workers()
        if workers == 0:
            return f"attempt {record.attempts} waiting in queue {self.queue}: no worker is alive to take it"
        return f"attempt {record.attempts} waiting in queue {self.queue} for a free slot ({workers} workers alive)"

    async def _live_workers(self) -> int | None:
        try:
            pool = self._connector().pool
            async with pool.connection() as connection:
                row = await (await connection.execute(_LIVE_WORKERS)).fetchone()
        except (psycopg.Error, RuntimeError) as exc:
            logger.debug("counting live workers failed: %s", exc)
            return None
        return None if row is None else int(row[0])

    def _connector(self) -> PsycopgConnector:
        connector = self.app.connector
        assert isinstance(connector, PsycopgConnector)
        return connector

    async def _abort(self, claimed: DispatchRecord) -> None:
        """The caller cancelled: the job is cancelled as ``expeditor cancel`` cancels it (``cancel.cancel_dispatch``):
        a waiting one is recorded ``cancelled`` and never launched; a running one is aborted, and its worker kills
        the session and records the end (not waited for here)."""

        async def abort_job(job_id: int) -> bool:
            return await self.app.job_manager.cancel_job_by_id_async(job_id, abort=True)

        job = f"{claimed.campaign_id}/{claimed.name}"
        try:
            done = await cancel_dispatch(
                self.runtime.store,
                abort_job,
                claimed.campaign_id,
                claimed.name,
                reason="the dispatch call was cancelled",
                wait=0,
            )
        except Unusable as exc:  # it ended meanwhile: nothing to stop
            logger.info("%s: the caller cancelled, but %s", job, exc)
        except Exception as exc:  # the store is what failed: say so, the worker's job goes on
            logger.error("%s: the caller cancelled, but its job could not be aborted: %s", job, exc)
        else:
            logger.info("%s: the caller cancelled: %s", job, done.message)


def _host(record: DispatchRecord) -> str:
    return "an unknown host" if record.owner is None else record.owner.host


def _ended(record: DispatchRecord) -> DispatchOutcome:
    verdict = {
        DispatchStatus.SUCCESS: "succeeded",
        DispatchStatus.CANCELLED: "was cancelled",
        DispatchStatus.INTERRUPTED: "was interrupted",
    }.get(record.status, "failed")
    why = f": {record.error}" if record.error else ""
    message = f"{record.campaign_id}/{record.name} {verdict} on {_host(record)}{why}"
    # The worker resumed the previous attempt's session when it ran that id (the transcript it restored, and
    # from where, is in that worker's log); a fresh session has an id of its own.
    resumed = record.resume_session_id is not None and record.dispatched_session_id == record.resume_session_id
    if resumed:
        message += f" (resumed session {record.dispatched_session_id})"
    return DispatchOutcome.of(record, message, host=_host(record), resumed=resumed)


@contextlib.asynccontextmanager
async def open_queue_launcher(runtime: Runtime) -> AsyncGenerator[QueueLauncher]:
    """The queue launcher of this process, for the block; refuses at once (one line) what cannot work."""
    settings = runtime.settings
    require_queue(settings, what="dispatch_mode queue")
    await anyio.to_thread.run_sync(check_queue_schema, settings)
    url = postgres_url(settings)
    assert url is not None, "require_queue checked it"
    wakeups = _Wakeups()
    opened = open_app(settings, queue=settings.dispatch_queue, connections=2)
    body_error: BaseException | None = None
    async with opened as app, anyio.create_task_group() as tasks:
        tasks.start_soon(wakeups.listen, url, connection_options(settings))
        try:
            yield QueueLauncher(runtime, app, wakeups, queue=settings.dispatch_queue)
        except BaseException as exc:
            # Re-raised below, outside the task group, so the caller sees its own exception, not a group.
            body_error = exc
        tasks.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
