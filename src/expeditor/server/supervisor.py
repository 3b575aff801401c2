"""The supervisor: every session this server launched, so shutdown and cancel_session reach them."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from expeditor.config import Settings
from expeditor.errors import ExpeditorError
from expeditor.executor import ClaudeCodeExecutor, RunControl, RunRequest, RunResult, SessionKind, Termination
from expeditor.ids import new_session_id
from expeditor.server.caller import CallerContext
from expeditor.server.child_config import allowed_tools, child_mcp_config
from expeditor.state import CampaignStore, Owner, RunEvidence, RunRecord, RunStatus
from expeditor.usage import SessionUsage
from expeditor.usage.loc import WorktreeState, lines_changed, worktree_state

__all__ = ["LiveRun", "RunContext", "Supervisor", "run_label"]

logger = logging.getLogger(__name__)

# Bound on waiting for the sessions' trees to die after the shutdown grace: SIGKILL is immediate.
_TEARDOWN_BOUND = 1.0


def run_label(prompt: str) -> str:
    """How reports name a run nobody labelled: its skill command (``/make-plan``), else ``prompt``."""
    first = prompt.split(maxsplit=1)[0] if prompt.strip() else ""
    return first if first.startswith("/") else "prompt"


@dataclass(frozen=True)
class RunContext:
    """What a run belongs to, for its RunRecord: a dispatch attempt, a pipeline step, or nothing (a plain run_skill).

    ``label`` names the run in usage reports (the step); None names it by its skill command.
    """

    campaign_id: str | None = None
    job_name: str | None = None
    dispatch_id: str | None = None
    attempt: int | None = None
    step_sequence: int | None = None
    label: str | None = None


@dataclass
class LiveRun:
    """A run in flight: its session id, its caller and the handle that cancels it."""

    session_id: str
    kind: SessionKind
    caller_session_id: str | None
    control: RunControl
    started_at: float = field(default_factory=time.time)


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
        self.live: dict[str, LiveRun] = {}
        self._changed = anyio.Event()
        self._closing: str | None = None

    @property
    def closing(self) -> str | None:
        """Why every run is being stopped (shutdown began), or None."""
        return self._closing

    def prepare(self, request: RunRequest) -> RunRequest:
        """Choose the child's id now, so its generated MCP config can name it."""
        session_id = request.resume_session_id or request.session_id or new_session_id()
        config = child_mcp_config(self.settings, kind=request.kind, child_session_id=session_id, http_url=self.http_url)
        update: dict[str, object] = {"session_id": None if request.resume_session_id else session_id}
        if config is not None and request.mcp_config is None:
            update["mcp_config"] = config
            update["allowed_tools"] = (*request.allowed_tools, *allowed_tools(request.kind))
        return request.model_copy(update=update)

    async def run(
        self,
        request: RunRequest,
        caller: CallerContext,
        *,
        control: RunControl | None = None,
        context: RunContext | None = None,
    ) -> RunResult:
        """Run one session for ``caller``; cancelling this call kills the session's tree first.

        Every run is a RunRecord in the store, so a cancelled or crashed one is on record too.
        """
        request = self.prepare(request)
        # Bad input is refused here, before anything is recorded or started.
        spec, _ = self.executor.prepare(
            request, marker_dir=self.settings.markers_path, caller_session_id=caller.session_id
        )
        control = control or RunControl()
        session_id = request.resume_session_id or request.session_id
        assert session_id is not None
        live = LiveRun(session_id, request.kind, caller.session_id, control)
        await self._record_started(live, request, context or RunContext(), spec.transcript_path)
        self.live[session_id] = live
        before: WorktreeState | None = None
        try:
            before = await self._worktree_state(request, control)
            if self._closing is not None:
                # Shutdown began while this run was being prepared: it must not outlive it.
                control.cancel(self._closing, grace=self.settings.shutdown_grace)
            result = await self.executor.run(
                request,
                marker_dir=self.settings.markers_path,
                caller_session_id=caller.session_id,
                control=control,
            )
        except BaseException as exc:
            if control.result is None:
                # Stopped before the session could start: its record must not stay "running".
                with anyio.CancelScope(shield=True):
                    await self._record_not_started(session_id, exc)
            raise
        finally:
            del self.live[session_id]
            self._changed.set()
            self._changed = anyio.Event()
            if control.result is not None:
                with anyio.CancelScope(shield=True):
                    await self._record_finished(control.result, request, before)
        return result

    async def _record_not_started(self, session_id: str, exc: BaseException) -> None:
        if self.store is None:
            return
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class() | KeyboardInterrupt)
        reason = "cancelled before the session started" if cancelled else f"expeditor failed to start it: {exc!r}"
        try:
            await anyio.to_thread.run_sync(
                functools.partial(
                    self.store.record_run_finished,
                    session_id,
                    status=RunStatus.CANCELLED if cancelled else RunStatus.FAILURE,
                    termination=Termination.CANCELLED if cancelled else Termination.LAUNCH_FAILED,
                    usage=SessionUsage(),
                    reason=reason,
                )
            )
        except ExpeditorError as error:
            logger.warning("session=%s could not be recorded as ended: %s", session_id, error)

    async def _worktree_state(self, request: RunRequest, control: RunControl) -> WorktreeState | None:
        """The work tree before the run, unless the run is cancelled first: then nothing is measured.

        A first snapshot of a large repository can take seconds; a shutdown must not wait for it.
        The abandoned git writes only to expeditor's own object cache, so nothing is left to clean.
        """
        if self.store is None or not self.settings.measure_loc:
            return None
        cache = self.settings.git_objects_cache
        state: WorktreeState | None = None
        async with anyio.create_task_group() as race:

            async def snapshot() -> None:
                nonlocal state
                state = await anyio.to_thread.run_sync(worktree_state, request.cwd, cache, abandon_on_cancel=True)
                race.cancel_scope.cancel()

            async def until_cancelled() -> None:
                await control.cancel_requested.wait()
                race.cancel_scope.cancel()

            race.start_soon(snapshot)
            race.start_soon(until_cancelled)
        return state

    async def _record_started(
        self, live: LiveRun, request: RunRequest, context: RunContext, transcript: Path | None
    ) -> None:
        if self.store is None:
            return
        record = RunRecord(
            run_id=live.session_id,
            kind=live.kind,
            caller_session_id=live.caller_session_id,
            campaign_id=context.campaign_id,
            job_name=context.job_name,
            dispatch_id=context.dispatch_id,
            attempt=context.attempt,
            step_sequence=context.step_sequence,
            transcript_path=None if transcript is None else str(transcript),
            label=context.label or run_label(request.prompt),
            model=request.model,
            # The environment the child gets: the executor's base, then the request's own.
            api_base_url=request.env.get("ANTHROPIC_BASE_URL") or self.executor.base_env.get("ANTHROPIC_BASE_URL"),
            owner=Owner.current(),
            started_at=live.started_at,
        )
        try:
            await anyio.to_thread.run_sync(self.store.record_run_started, record)
        except ExpeditorError as exc:
            # The run is still supervised; only its record is missing, and the log says so.
            logger.warning("session=%s could not be recorded as started: %s", live.session_id, exc)

    async def _record_finished(self, result: RunResult, request: RunRequest, before: WorktreeState | None) -> None:
        if self.store is None:
            return
        loc_changed: int | None = None
        # A cancelled run is being torn down, often with its whole server: no time for git then.
        if before is not None and result.termination is not Termination.CANCELLED:
            after = await anyio.to_thread.run_sync(worktree_state, request.cwd, self.settings.git_objects_cache)
            loc_changed = await anyio.to_thread.run_sync(lines_changed, request.cwd, before, after)
        try:
            await anyio.to_thread.run_sync(
                functools.partial(
                    self.store.record_run_finished,
                    result.session_id,
                    status=RunStatus.from_termination(result.termination, is_error=result.is_error),
                    termination=result.termination,
                    usage=result.usage,
                    reason=result.reason,
                    loc_changed=loc_changed,
                    evidence=RunEvidence.of(result),
                )
            )
        except ExpeditorError as exc:
            logger.warning("session=%s could not be recorded as finished: %s", result.session_id, exc)

    async def wait_until_idle(self) -> None:
        """Return once no run of this server is live."""
        while self.live:
            await self._changed.wait()

    def cancel(self, session_id: str, reason: str, *, grace: float | None = None) -> bool:
        """Cancel one live run of this server; False when it is not one of ours."""
        live = self.live.get(session_id)
        if live is None:
            return False
        live.control.cancel(reason, grace=grace)
        return True

    def cancel_all(self, reason: str, *, grace: float) -> int:
        """Cancel every live run with a short grace, and every run started from now on; returns how many."""
        self._closing = reason
        for live in list(self.live.values()):
            live.control.cancel(reason, grace=grace)
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
        logger.warning("%s: stopped %d sessions in %.0f ms", cause, count, (anyio.current_time() - started) * 1000)
        return count
