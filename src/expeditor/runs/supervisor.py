"""The supervisor: the one way to launch a supervised run, and every run this process has in flight.

``run`` (or ``prepare`` then drive the handle) checks the request once, holds the caller's
execution marker around the run (trusted until the run's own deadline plus the kill grace), records
the run from start to end (and what it spent so far while it goes on: ``runs.progress``), and keeps
its handle until it ends, so shutdown and cancel_session reach it. The server's tools, the dispatcher
and the pipeline runner all launch through here.

When this process serves HTTP, each run's session gets its own token (``credentials``), valid from
the moment the run starts until it ends, however it ends.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from pathlib import Path

import anyio
import anyio.abc

from expeditor.config import RunPolicy, Settings
from expeditor.errors import InvalidInput
from expeditor.executor import ClaudeCodeExecutor, LaunchSpec, RunControl, RunRequest, RunResult
from expeditor.ids import new_session_id
from expeditor.monitor import execution_marker
from expeditor.runs.caller import CallerContext
from expeditor.runs.child_config import allowed_tools, child_mcp_config
from expeditor.runs.credentials import SessionCredential, SessionCredentials, new_session_token
from expeditor.runs.handle import RunHandle
from expeditor.runs.progress import ProgressFollower
from expeditor.runs.records import RunContext, RunRecorder
from expeditor.state import CampaignStore
from expeditor.usage import WorktreeState

__all__ = ["Supervisor"]

logger = logging.getLogger(__name__)

# Bound on waiting for the sessions' trees to die after the shutdown grace: SIGKILL is immediate.
_TEARDOWN_BOUND = 1.0


class Supervisor:
    """Launches sessions through the executor and keeps a handle on each until it ends."""

    def __init__(
        self,
        settings: Settings,
        executor: ClaudeCodeExecutor,
        *,
        http_url: str | None = None,
        store: CampaignStore | None = None,
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.http_url = http_url
        self.store = store
        # Where this process's markers go and its sessions' watchers look: read once, passed down.
        self.marker_dir: Path = settings.markers_path
        self.live: dict[str, RunHandle] = {}
        self.credentials = SessionCredentials()
        self._records = RunRecorder(settings, store, executor.base_env)
        self._changed = anyio.Event()
        self._closing: str | None = None

    @property
    def closing(self) -> str | None:
        """Why every run is being stopped (shutdown began), or None."""
        return self._closing

    def prepare(
        self,
        request: RunRequest,
        caller: CallerContext,
        *,
        marker: str | None = None,
        control: RunControl | None = None,
        context: RunContext | None = None,
    ) -> RunHandle:
        """Check ``request`` and return the handle of its run, ready to drive; nothing is recorded or started yet.

        Bad input is refused here (InvalidInput), before any record, marker or process exists; so is a
        second run of a session this server is running now (a resume of a session still in flight).
        ``marker`` is the label of the execution marker held for ``caller`` while the run goes on.
        """
        token = new_session_token() if self.http_url is not None else None
        request = self._with_child_config(request, token)
        spec, policy = self.executor.prepare(request, marker_dir=self.marker_dir, caller_session_id=caller.session_id)
        self._refuse_a_second_run_of(spec.session_id)
        launched_by = caller.chain()

        async def body(handle: RunHandle) -> RunResult:
            # Granted only while the run is driven, so a handle never run leaves no live token behind.
            if token is not None:
                self.credentials.grant(token, SessionCredential(handle.session_id, handle.kind, launched_by))
            try:
                async with self._caller_marker(marker, caller, policy):
                    return await self._supervise(handle, request, spec, policy, context or RunContext())
            finally:
                if token is not None:
                    self.credentials.revoke(token)

        return RunHandle(
            spec.session_id, request.kind, caller.session_id, control or RunControl(), body, launched_by=launched_by
        )

    async def run(
        self,
        request: RunRequest,
        caller: CallerContext,
        *,
        marker: str | None = None,
        control: RunControl | None = None,
        context: RunContext | None = None,
    ) -> RunResult:
        """Run one session for ``caller`` to its end; cancelling this call kills the session's tree first.

        Every run is a RunRecord in the store, so a cancelled or crashed one is on record too.
        """
        return await self.prepare(request, caller, marker=marker, control=control, context=context).run()

    def start(
        self,
        task_group: anyio.abc.TaskGroup,
        request: RunRequest,
        caller: CallerContext,
        *,
        marker: str | None = None,
        context: RunContext | None = None,
    ) -> RunHandle:
        """Launch a run that goes on in ``task_group`` after this call returns; poll or await its handle."""
        handle = self.prepare(request, caller, marker=marker, context=context)
        task_group.start_soon(handle.run_in_background)
        return handle

    def _refuse_a_second_run_of(self, session_id: str) -> None:
        if session_id in self.live:
            raise InvalidInput(
                f"session {session_id} is already running under this server: wait for its result (or cancel it) "
                "before resuming it again"
            )

    def _with_child_config(self, request: RunRequest, session_token: str | None) -> RunRequest:
        """Choose the child's id now, and give it the MCP config that carries its own credential."""
        session_id = request.resume_session_id or request.session_id or new_session_id()
        config = child_mcp_config(self.settings, kind=request.kind, http_url=self.http_url, session_token=session_token)
        update: dict[str, object] = {"session_id": None if request.resume_session_id else session_id}
        if config is not None and request.mcp_config is None:
            update["mcp_config"] = config
            update["allowed_tools"] = (*request.allowed_tools, *allowed_tools(request.kind))
        return request.model_copy(update=update)

    @contextlib.asynccontextmanager
    async def _caller_marker(self, label: str | None, caller: CallerContext, policy: RunPolicy) -> AsyncGenerator[None]:
        """The caller's marker while it waits: trusted until this run's own deadline plus the kill grace."""
        if label is None:
            yield
            return
        async with execution_marker(
            self.marker_dir,
            label,
            caller.session_id,
            expires_at=time.time() + policy.timeout + self.settings.kill_grace,
            heartbeat_interval=self.settings.marker_heartbeat_interval,
        ):
            yield

    async def _supervise(
        self, handle: RunHandle, request: RunRequest, spec: LaunchSpec, policy: RunPolicy, context: RunContext
    ) -> RunResult:
        control = handle.control
        # Checked again with no await until the entry exists: two handles of one session may be prepared at once.
        self._refuse_a_second_run_of(handle.session_id)
        self.live[handle.session_id] = handle
        before: WorktreeState | None = None
        try:
            await self._records.started(
                session_id=handle.session_id,
                kind=handle.kind,
                caller_session_id=handle.caller_session_id,
                started_at=handle.started_at,
                request=request,
                context=context,
                transcript=spec.transcript_path,
            )
            before = await self._records.worktree_before(request, control)
            if self._closing is not None:
                # Shutdown began while this run was being prepared: it must not outlive it.
                control.cancel(self._closing, grace=self.settings.shutdown_grace)
            result = await self.executor.run_prepared(spec, policy, control=control, followers=self._followers(handle))
        except BaseException as exc:
            if control.result is None:
                # Stopped before the session could start: its record must not stay "running".
                with anyio.CancelScope(shield=True):
                    await self._records.not_started(handle.session_id, exc)
            raise
        finally:
            try:
                if control.result is not None:
                    with anyio.CancelScope(shield=True):
                        await self._records.finished(control.result, request, before)
            finally:
                # Only once it is on record: whoever waits for this process to be idle may close the store next.
                del self.live[handle.session_id]
                self._changed.set()
                self._changed = anyio.Event()
        return result

    def _followers(self, handle: RunHandle) -> tuple[ProgressFollower, ...]:
        """What follows a run besides the executor's watchers: its progress, pushed to the store."""
        if self.store is None:
            return ()
        return (ProgressFollower(self.store, handle.session_id, interval=self.settings.run_progress_interval),)

    async def wait_until_idle(self) -> None:
        """Return once no run of this server is live."""
        while self.live:
            await self._changed.wait()

    def launched_by(self, session_id: str) -> tuple[str, ...] | None:
        """The sessions that launched a live run of this server (nearest first), or None if it is not live."""
        live = self.live.get(session_id)
        return None if live is None else live.launched_by

    def cancel(self, session_id: str, reason: str, *, grace: float | None = None) -> bool:
        """Cancel one live run of this server; False when it is not one of ours."""
        live = self.live.get(session_id)
        if live is None:
            return False
        live.cancel(reason, grace=grace)
        return True

    def cancel_all(self, reason: str, *, grace: float) -> int:
        """Cancel every live run with a short grace, and every run started from now on; returns how many."""
        self._closing = reason
        for live in list(self.live.values()):
            live.cancel(reason, grace=grace)
        if self.live:
            logger.info("cancelling %d live sessions: %s", len(self.live), reason)
        return len(self.live)

    async def shut_down(self, cause: str) -> int:
        """Stop every run within ``shutdown_grace`` plus a bounded teardown; returns how many were live.

        The one shutdown path of a server and of a pipeline runner; ``cause`` says who received what
        ("the expeditor server received SIGINT") and goes into every run's reason.
        """
        started = anyio.current_time()
        count = self.cancel_all(f"{cause} and stopped the session", grace=self.settings.shutdown_grace)
        with anyio.move_on_after(self.settings.shutdown_grace + _TEARDOWN_BOUND):
            await self.wait_until_idle()
        # Stopping with nothing to stop is a normal end (Claude Code stops every nested server with SIGINT).
        level = logging.WARNING if count else logging.INFO
        elapsed_ms = (anyio.current_time() - started) * 1000
        logger.log(level, "%s: stopped %d sessions in %.0f ms", cause, count, elapsed_ms)
        return count
