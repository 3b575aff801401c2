"""One claimed attempt of a dispatched job, run on this host: the one piece both launchers share.

The local launcher runs it in the process that claimed; a queue worker runs it for a claim another host
made, taking the record over (``owner``) as the session starts. Either way the attempt goes through the
same request building, ``Supervisor``, executor, watchers, markers and registry, and its end is recorded
with its attempt number by the job lifecycle.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

import anyio

from expeditor.claude_paths import transcript_path
from expeditor.dispatch.outcome import DispatchOutcome
from expeditor.executor import RunControl, RunRequest, RunResult, SessionKind, Termination
from expeditor.ids import new_session_id
from expeditor.recipes import Orchestrator, Recipe, orchestrator_prompt
from expeditor.runs import (
    CallerContext,
    ClaimedJob,
    JobEnd,
    MarkRunning,
    RunContext,
    Runtime,
    ended_by,
    settings_environment,
)
from expeditor.runs.worktrees import JobWorktree, finish_worktree, prepare_worktree
from expeditor.state import DispatchRecord, DispatchStatus, Owner, RunStatus

__all__ = ["DISPATCH_MARKER_LABEL", "TranscriptKeeper", "run_attempt"]

logger = logging.getLogger(__name__)

DISPATCH_MARKER_LABEL = "dispatch"


class TranscriptKeeper(Protocol):
    """Resume across hosts (``expeditor.queue.transcripts``): what a queue worker adds to an orchestrator's attempt."""

    def restore(self, work_dir: Path, session_id: str) -> tuple[bool, str]:
        """Make the session's transcript resumable at ``work_dir`` here; whether it is, and from where (or why not)."""
        ...

    def checkpointing(self, session_id: str, work_dir: Path) -> AbstractAsyncContextManager[None]:
        """Keep the running session's transcript in the store while the block runs."""
        ...


async def run_attempt(
    runtime: Runtime,
    claimed: ClaimedJob,
    recipe: Recipe,
    inputs: dict[str, str],
    work_dir: Path,
    caller: CallerContext,
    *,
    stale_threshold: float | None,
    control: RunControl,
    owner: Owner | None = None,
    interrupted_by: Callable[[], str | None] | None = None,
    transcripts: TranscriptKeeper | None = None,
    isolated: bool = False,
) -> DispatchOutcome:
    """Run ``claimed``'s attempt under a ``dispatch`` marker for ``caller`` and record its end.

    ``owner``: the process that takes the record over from its claimer when the session starts (a queue
    worker); the take-over is legal once per attempt, so a second launcher of the attempt is refused there
    (``FencedOut``, and nothing is recorded). ``interrupted_by()``: while it gives a reason (its process is
    stopping), a cancelled attempt is recorded ``interrupted`` with it, to be run again, not ``cancelled``.
    ``transcripts``: an orchestrator's transcript is restored from the store before it resumes and checkpointed
    into it while it runs, so another host can resume it. ``isolated``: the job runs in its own git worktree
    of ``work_dir``'s project, prepared here at its first launch and found again by every later one.
    """

    def ended(end: JobEnd) -> JobEnd:
        why = None if interrupted_by is None or end.status is not RunStatus.CANCELLED else interrupted_by()
        return end if why is None else JobEnd(RunStatus.INTERRUPTED, why, summary=end.summary)

    settings = runtime.settings
    record = claimed.record
    campaign, name, attempt = record.campaign_id, record.name, claimed.claim.attempt
    prior_session_id = record.resume_session_id
    pipeline = recipe.orchestrator is Orchestrator.PIPELINE
    resumes_from: str | None = None
    resume = False
    worktree: JobWorktree | None = None
    context = RunContext(
        campaign_id=campaign,
        job_name=name,
        dispatch_id=record.dispatch_id,
        attempt=attempt,
        label="pipeline runner" if pipeline else "orchestrator",
    )

    async def attempt_body(mark_running: MarkRunning) -> JobEnd:
        # Inside the attempt, so a worktree that cannot be made is this attempt's recorded end.
        nonlocal resumes_from, resume, worktree
        here = work_dir
        if isolated:
            worktree = await anyio.to_thread.run_sync(prepare_worktree, settings, work_dir, campaign, name)
            here = await anyio.to_thread.run_sync(worktree.directory_for, work_dir)
        if transcripts is not None and prior_session_id is not None and not pipeline:
            available, where = await anyio.to_thread.run_sync(transcripts.restore, here, prior_session_id)
            resumes_from = (
                f"resumed session {prior_session_id} from {where}" if available else f"started fresh: {where}"
            )
            # Starting over loses the session's work so far: worth a warning, where a resume is routine.
            logger.log(
                logging.INFO if available else logging.WARNING,
                "session=%s dispatch %s/%s: %s",
                prior_session_id,
                campaign,
                name,
                resumes_from,
            )
        # The pipeline runner resumes from its step records, so every attempt of it is a fresh process.
        resume = (
            not pipeline
            and prior_session_id is not None
            and transcript_path(settings.claude_config_dir, here, prior_session_id).exists()
        )
        session_id = prior_session_id if resume and prior_session_id else new_session_id()
        if pipeline:
            request = _pipeline_request(runtime, record, recipe, inputs, here, session_id, stale_threshold)
        else:
            request = _orchestrator_request(runtime, recipe, inputs, here, session_id, resume, stale_threshold)
        logger.info(
            "session=%s dispatch %s/%s attempt %d%s", session_id, campaign, name, attempt, " (resumed)" * resume
        )
        where_it_runs = {} if worktree is None else {"worktree": str(worktree.path), "branch": worktree.branch}
        await mark_running(session_id, **where_it_runs)
        keeping = (
            transcripts.checkpointing(session_id, here)
            if transcripts is not None and not pipeline
            else contextlib.nullcontext()
        )
        async with keeping:
            result = await runtime.supervisor.run(
                request, caller, marker=DISPATCH_MARKER_LABEL, control=control, context=context
            )
        return ended(job_end(result))

    def stopped(exc: BaseException) -> JobEnd:
        if control.result is not None:
            # The session ended and said how: that verdict stands, whatever stopped this call afterwards.
            return ended(job_end(control.result))
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            return ended(JobEnd(RunStatus.CANCELLED, "the dispatch call was cancelled"))
        return ended_by(exc)

    recorded = await runtime.jobs.launch(claimed, attempt_body, stopped=stopped, owner=owner)
    final = recorded.record
    result = control.result
    assert result is not None
    verdict = {
        DispatchStatus.SUCCESS: "succeeded",
        DispatchStatus.CANCELLED: "was cancelled",
        DispatchStatus.INTERRUPTED: "was interrupted",
    }.get(final.status, "failed")
    why = result.reason
    if pipeline and result.termination is Termination.COMPLETED:
        # The runner's own verdict ("pipeline failure: step 'test' failed ...") says more than its exit.
        why = (result.result_text.strip().splitlines() or [why])[0]
    message = f"{campaign}/{name} {verdict}: {why}"
    if worktree is not None:
        finish = functools.partial(
            finish_worktree,
            worktree,
            succeeded=final.status is DispatchStatus.SUCCESS,
            keep=recipe.keep_worktree,
            job=f"{campaign}/{name}",
        )
        message += "; " + await anyio.to_thread.run_sync(finish)
    if recorded.error is not None:
        message += f"; but {recorded.error}, so the next dispatch may run it again"
    if resumes_from is not None:
        message += f" ({resumes_from})"
    return DispatchOutcome.of(
        final, message, resumed=resume, result=result, record_error=recorded.error, host=runtime.store.host
    )


def job_end(result: RunResult) -> JobEnd:
    """The job's end as its run says: a pipeline's outputs are its recorded steps' captures (None reads them)."""
    status = RunStatus.from_termination(result.termination, is_error=result.is_error)
    return JobEnd(status, result.reason, summary=result.result_text[-4000:] or None)


def _orchestrator_request(
    runtime: Runtime,
    recipe: Recipe,
    inputs: dict[str, str],
    work_dir: Path,
    session_id: str,
    resume: bool,
    stale_threshold: float | None,
) -> RunRequest:
    prompt = orchestrator_prompt(recipe, inputs, cwd=str(work_dir))
    if resume:
        prompt = (
            "You were interrupted while running this job. Continue from where you stopped; "
            "do not redo steps that already succeeded.\n\n" + prompt
        )
    return RunRequest(
        prompt=prompt,
        cwd=work_dir,
        kind=SessionKind.ORCHESTRATOR,
        session_id=None if resume else session_id,
        resume_session_id=session_id if resume else None,
        timeout=runtime.settings.dispatch_timeout,
        stale_threshold=stale_threshold,
    )


def _pipeline_request(
    runtime: Runtime,
    record: DispatchRecord,
    recipe: Recipe,
    inputs: dict[str, str],
    work_dir: Path,
    session_id: str,
    stale_threshold: float | None,
) -> RunRequest:
    """The pipeline runner as the dispatched child: it runs the steps, this dispatch holds the claim.

    It is silent while a step runs, holding a ``pipeline-step`` marker for its own id, so only a
    runner that is stuck between steps (or a step past its own deadline) goes stale.
    """
    argv = [sys.executable, "-m", "expeditor", "recipe", "run", recipe.name]
    for key, value in inputs.items():
        argv += ["--input", f"{key}={value}"]
    argv += ["--campaign", record.campaign_id, "--job", record.name, "--cwd", str(work_dir)]
    argv += ["--dispatched", "--output-format", "stream-json"]
    return RunRequest(
        prompt=f"pipeline {recipe.name} for {record.campaign_id}/{record.name}",
        argv=tuple(argv),
        argv_reports_result=True,
        cwd=work_dir,
        kind=SessionKind.PIPELINE,
        session_id=session_id,
        timeout=runtime.settings.dispatch_timeout,
        stale_threshold=stale_threshold,
        env=settings_environment(runtime.settings),
    )
