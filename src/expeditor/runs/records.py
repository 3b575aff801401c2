"""Every supervised run is a RunRecord: written when it starts, closed when it ends, whatever ends it.

The lines a run changed are measured here too (a git snapshot of its working tree before and
after), because they belong on its record and nowhere else. A store that cannot be written
never stops a run: the run stays supervised, and the log says which record is missing. A run's
end is pressed harder (``expeditor.runs.endings``): retried, then written whole, so a store that
was recreated while the run went on gets the run back with its end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio

from expeditor.config import Settings
from expeditor.errors import ExpeditorError
from expeditor.executor import OWN_CHILDREN, RunControl, RunRequest, RunResult, SessionKind, Termination
from expeditor.runs.endings import EndRetry, encodable_copy, land_end
from expeditor.state import CampaignStore, Owner, RunEvidence, RunRecord, RunStatus
from expeditor.usage import SessionUsage, WorktreeState, lines_changed, worktree_state

__all__ = ["RunContext", "RunRecorder", "run_label"]

logger = logging.getLogger(__name__)


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


class RunRecorder:
    """Writes the runs of one supervisor to its store (or nowhere, without one)."""

    def __init__(
        self,
        settings: Settings,
        store: CampaignStore | None,
        base_env: Mapping[str, str],
        *,
        end_retry: EndRetry | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self._base_env = base_env
        self._end_retry = end_retry or EndRetry()
        # Each live run's record as started, by session id: what is written whole if its end cannot be.
        self._started: dict[str, RunRecord] = {}

    async def started(
        self,
        *,
        session_id: str,
        kind: SessionKind,
        caller_session_id: str | None,
        started_at: float,
        request: RunRequest,
        context: RunContext,
        transcript: Path | None,
    ) -> None:
        if self.store is None:
            return
        record = RunRecord(
            run_id=session_id,
            kind=kind,
            caller_session_id=caller_session_id,
            campaign_id=context.campaign_id,
            job_name=context.job_name,
            dispatch_id=context.dispatch_id,
            attempt=context.attempt,
            step_sequence=context.step_sequence,
            transcript_path=None if transcript is None else str(transcript),
            label=context.label or run_label(request.prompt),
            model=request.model,
            # The environment the child gets: the executor's base, then the request's own.
            api_base_url=request.env.get("ANTHROPIC_BASE_URL") or self._base_env.get("ANTHROPIC_BASE_URL"),
            owner=Owner.current(self.store.host),
            started_at=started_at,
        )
        self._started[session_id] = record
        try:
            self._started[session_id] = await anyio.to_thread.run_sync(self.store.record_run_started, record)
        except ExpeditorError as exc:
            # The run is still supervised; only its record is missing, and the log says so.
            logger.warning("session=%s could not be recorded as started: %s", session_id, exc)

    async def not_started(self, session_id: str, exc: BaseException) -> None:
        """Close the record of a run stopped before its session could start: it must not stay "running"."""
        if self.store is None:
            return
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class() | KeyboardInterrupt)
        reason = "cancelled before the session started" if cancelled else f"expeditor failed to start it: {exc!r}"
        end = _RunEnd(
            status=RunStatus.CANCELLED if cancelled else RunStatus.FAILURE,
            termination=Termination.CANCELLED if cancelled else Termination.LAUNCH_FAILED,
            usage=SessionUsage(),
            reason=reason,
        )
        await self._write_end(session_id, end)

    def _own_directories(self) -> tuple[Path, ...]:
        """Where expeditor itself writes: never lines an agent changed, even inside the repository."""
        return (self.settings.home, self.settings.markers_path)

    async def worktree_before(self, request: RunRequest, control: RunControl) -> WorktreeState | None:
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
                with OWN_CHILDREN.commands_in_threads():
                    state = await anyio.to_thread.run_sync(
                        worktree_state, request.cwd, cache, self._own_directories(), abandon_on_cancel=True
                    )
                race.cancel_scope.cancel()

            async def until_cancelled() -> None:
                await control.cancel_requested.wait()
                race.cancel_scope.cancel()

            race.start_soon(snapshot)
            race.start_soon(until_cancelled)
        return state

    async def finished(self, result: RunResult, request: RunRequest, before: WorktreeState | None) -> None:
        if self.store is None:
            return
        loc_changed: int | None = None
        # A cancelled run is being torn down, often with its whole server: no time for git then.
        if before is not None and result.termination is not Termination.CANCELLED:
            with OWN_CHILDREN.commands_in_threads():
                after = await anyio.to_thread.run_sync(
                    worktree_state, request.cwd, self.settings.git_objects_cache, self._own_directories()
                )
                loc_changed = await anyio.to_thread.run_sync(lines_changed, request.cwd, before, after)
        end = _RunEnd(
            status=RunStatus.from_termination(result.termination, is_error=result.is_error),
            termination=result.termination,
            usage=result.usage,
            reason=result.reason,
            loc_changed=loc_changed,
            evidence=RunEvidence.of(result),
        )
        await self._write_end(result.session_id, end)

    async def _write_end(self, session_id: str, end: _RunEnd) -> None:
        """Close the run's record, whatever the store went through since it started; never raises."""
        assert self.store is not None
        store, started = self.store, self._started.pop(session_id, None)

        def mark() -> RunRecord:
            return store.record_run_finished(
                session_id,
                status=end.status,
                termination=end.termination,
                usage=end.usage,
                reason=end.reason,
                loc_changed=end.loc_changed,
                evidence=end.evidence,
            )

        def restore() -> RunRecord:
            if started is None:  # nothing to write whole: only a run this recorder started is known to it
                return mark()
            now = time.time()
            ended = started.model_copy(update={**end.fields(), "finished_at": now, "updated_at": now})
            return store.restore_run(encodable_copy(ended))

        doing = f"session={session_id} recording the end of its run"
        try:
            _, restored = await anyio.to_thread.run_sync(land_end, doing, mark, restore, self._end_retry)
        except Exception as exc:  # the run ended all the same: its caller gets its result, the log the rest
            logger.error("session=%s could not be recorded as ended: %s", session_id, exc, exc_info=exc)
            return
        if restored:
            logger.warning("session=%s: its run was written again, whole, with its end", session_id)


@dataclass(frozen=True)
class _RunEnd:
    """How a run ended, as its record will say."""

    status: RunStatus
    termination: Termination
    usage: SessionUsage
    reason: str | None
    loc_changed: int | None = None
    evidence: RunEvidence | None = None

    def fields(self) -> dict[str, object]:
        return {
            "status": self.status,
            "termination": self.termination,
            "usage": self.usage,
            "reason": self.reason,
            "loc_changed": self.loc_changed,
            "evidence": self.evidence,
        }
