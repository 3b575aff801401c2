"""``expeditor recipe run``: one pipeline job, claimed in the campaign store, resumable by rerunning.

The job's identity is (campaign, job name). The campaign defaults to one derived from the
recipe, its inputs and the project directory, so the same command line names the same job and
a rerun resumes it;
a job that already succeeded returns at once (``--force`` runs it again from the start).
Run by a dispatcher (``--dispatched``), the dispatcher holds the claim and writes the job's
record; this process only runs the steps and reports on stdout in stream-json.

SIGINT and SIGTERM take the server's shutdown path: the running step's tree is killed within
``shutdown_grace``, its markers go, its run and step are recorded ``cancelled``, and the next
run resumes at that step.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import anyio
from rich.console import Console

from expeditor.config import Settings
from expeditor.executor import checked_directory
from expeditor.ids import new_session_id, validate_identifier
from expeditor.logs import configure_logging
from expeditor.recipes.loader import RecipeLibrary
from expeditor.recipes.observer import PipelineObserver
from expeditor.recipes.pipeline import PipelineJob, PipelineOutcome, PipelineRunner
from expeditor.recipes.progress import (
    LinesProgress,
    LiveProgress,
    StreamJsonProgress,
    SupervisorView,
    summary_table,
    summary_text,
)
from expeditor.recipes.schema import Recipe
from expeditor.reports import campaign_report, render_markdown, render_table
from expeditor.runs import JobEnd, MarkRunning, Runtime, Supervisor, open_runtime
from expeditor.runs.worktrees import Isolation, JobWorktree, finish_worktree, isolatable_project, prepare_worktree
from expeditor.state import CampaignStore, ClaimAction, RunStatus, inputs_hash

__all__ = ["EXIT_CANCELLED", "RecipeRun", "default_campaign", "run_recipe"]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 130
_EXIT_CODES = {"success": EXIT_OK, "failure": EXIT_FAILED, "cancelled": EXIT_CANCELLED}


def default_campaign(recipe: str, inputs: Mapping[str, str], cwd: Path) -> str:
    """The campaign of a recipe run that names none: the same recipe, inputs and project give the same one."""
    return f"{recipe}-{inputs_hash({'inputs': dict(inputs), 'cwd': str(cwd)})[:12]}"


@dataclass(frozen=True)
class RecipeRun:
    """What ``expeditor recipe run`` was asked to do."""

    recipe: str
    inputs: Mapping[str, str]
    campaign_id: str | None = None
    job_name: str | None = None
    cwd: Path | None = None
    force: bool = False
    dispatched: bool = False
    stream_json: bool = False


def _load(settings: Settings, request: RecipeRun) -> tuple[Recipe, dict[str, str]]:
    recipe = RecipeLibrary.from_settings(settings).load(request.recipe)
    return recipe, recipe.resolve_inputs(request.inputs)


def run_recipe(settings: Settings, request: RecipeRun, out: TextIO | None = None) -> int:
    """Run the job to its end; returns the exit code (0 success or already done, 1 failure, 130 stopped)."""
    target = out or sys.stdout
    recipe, inputs = _load(settings, request)
    cwd = checked_directory(settings, request.cwd or settings.allowed_roots[0], what="cwd")
    campaign = request.campaign_id or default_campaign(recipe.name, inputs, cwd)
    job_name = request.job_name or recipe.name
    validate_identifier(campaign, what="campaign")
    validate_identifier(job_name, what="job name")
    if recipe.isolation is Isolation.WORKTREE and not request.dispatched:
        isolatable_project(settings, cwd)  # refused before the claim; a dispatcher checked it before launching us
    # Launched by a dispatcher, this process is a managed session and keys its markers on its own id.
    own_id = os.environ.get("EXPEDITOR_SESSION_ID")
    run_id = (
        own_id if request.dispatched and own_id and os.environ.get("EXPEDITOR_SESSION_KIND") == "pipeline" else None
    ) or new_session_id()
    configure_logging(settings)
    notes = sys.stderr if request.stream_json else target
    if request.campaign_id is None:
        notes.write(f"campaign {campaign} (rerun the same command to resume it)\n")
    job = PipelineJob(recipe, inputs, campaign, job_name, cwd, run_id)
    try:
        return anyio.run(_run_job, settings, job, request, target)
    except BaseExceptionGroup as group:
        # The job runs inside a task group (beside its signal listener), which wraps what it raises;
        # one error is reported as itself, so a refused claim reads as a message, not a traceback.
        errors = group.exceptions
        if len(errors) == 1 and not isinstance(errors[0], BaseExceptionGroup):
            raise errors[0] from None
        raise


async def _run_job(settings: Settings, job: PipelineJob, request: RecipeRun, out: TextIO) -> int:
    code = EXIT_CANCELLED
    stopped_by_signal = False
    # Listening from the first moment to the last record: a signal stops the running step, and a
    # second one (Claude Code sends SIGTERM 100 ms after SIGINT) cannot cut the bookkeeping short.
    # One that arrives while the runtime opens (and reaps what a runner killed with SIGKILL left: its
    # step's registry entry, run record and marker) waits in the receiver until the listener starts.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_runtime(
            settings, closing_reason="the pipeline runner is stopping", owner_kind="pipeline"
        ) as runtime:
            supervisor = runtime.supervisor
            async with anyio.create_task_group() as group:
                group.start_soon(_stop_on_signals, supervisor, signals)
                code = await _claim_and_run(runtime, job, request, out)
                group.cancel_scope.cancel()
            stopped_by_signal = supervisor.closing is not None
    if stopped_by_signal:
        # Stopped by a signal and fully recorded: a second signal in the last milliseconds
        # (Claude Code sends SIGTERM 100 ms after SIGINT) must not turn exit 130 into 143.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return code


async def _claim_and_run(runtime: Runtime, job: PipelineJob, request: RecipeRun, out: TextIO) -> int:
    if request.dispatched:
        # The dispatcher holds the claim and records the job's end; this process only runs the steps.
        outcome = await _run_with_progress(runtime, job, request, out)
        return _EXIT_CODES[outcome.status]
    claimed = await runtime.jobs.claim(
        job.campaign_id,
        job.job_name,
        recipe=job.recipe.name,
        inputs=job.inputs,
        caller_session_id=None,
        force=request.force,
        replays_steps=True,
    )
    claim = claimed.claim
    if claim.action is ClaimAction.SHORT_CIRCUIT:
        out.write(
            f"{job.campaign_id}/{job.job_name} already succeeded (attempt {claim.record.attempts}); "
            "nothing was run. Use --force to run it again.\n"
        )
        return EXIT_OK
    if claim.action is ClaimAction.ALREADY_RUNNING:
        out.write(f"{job.campaign_id}/{job.job_name} is already running: {claim.reason}\n")
        return EXIT_FAILED
    if claimed.forgotten_steps:
        out.write(f"{claimed.forgotten_steps} recorded step executions are not replayed: {claimed.forgotten_because}\n")
    outcome: PipelineOutcome | None = None
    worktree: JobWorktree | None = None

    async def attempt_body(mark_running: MarkRunning) -> JobEnd:
        nonlocal outcome, worktree
        isolated_job = job
        if job.recipe.isolation is Isolation.WORKTREE:
            prepare = functools.partial(prepare_worktree, runtime.settings, job.cwd, job.campaign_id, job.job_name)
            worktree = await anyio.to_thread.run_sync(prepare)
            isolated_job = replace(job, cwd=await anyio.to_thread.run_sync(worktree.directory_for, job.cwd))
            await mark_running(job.run_id, worktree=str(worktree.path), branch=worktree.branch)
        else:
            await mark_running(job.run_id)
        outcome = await _run_with_progress(runtime, isolated_job, request, out)
        status = {"success": RunStatus.SUCCESS, "failure": RunStatus.FAILURE, "cancelled": RunStatus.CANCELLED}
        summary = summary_text(outcome.executions, outcome.replayed) if outcome.success else None
        return JobEnd(status[outcome.status], outcome.reason, summary=summary, outputs=outcome.captures)

    def stopped(exc: BaseException) -> JobEnd:
        # The runner itself failed (its output closed, a bug): the job must not stay "running".
        return JobEnd(RunStatus.FAILURE, f"the pipeline runner stopped: {exc!r}")

    await runtime.jobs.launch(claimed, attempt_body, stopped=stopped)
    assert outcome is not None
    if worktree is not None:
        finish = functools.partial(
            finish_worktree,
            worktree,
            succeeded=outcome.success,
            keep=job.recipe.keep_worktree,
            job=f"{job.campaign_id}/{job.job_name}",
        )
        out.write(f"{job.campaign_id}/{job.job_name}: {await anyio.to_thread.run_sync(finish)}\n")
    return _EXIT_CODES[outcome.status]


async def _run_with_progress(runtime: Runtime, job: PipelineJob, request: RecipeRun, out: TextIO) -> PipelineOutcome:
    settings, store, supervisor = runtime.settings, runtime.store, runtime.supervisor
    started = time.time()
    stream = StreamJsonProgress(out, job.run_id) if request.stream_json else None
    if stream is not None:
        stream.emit({"type": "system", "subtype": "init", "cwd": str(job.cwd), "model": "pipeline"})
    console = Console(file=out)
    live = LiveProgress(console, SupervisorView(supervisor)) if stream is None and out.isatty() else None
    observer: PipelineObserver = stream or live or LinesProgress(out)
    runner = PipelineRunner(settings, store, supervisor, job, observer)
    if live is not None:
        with live:
            outcome = await runner.run()
    else:
        outcome = await runner.run()
    try:
        await _report_end(store, job, outcome, stream, console, out, started)
    except (OSError, SystemExit) as exc:
        # Its reader went away (`| head`; rich turns a broken pipe into SystemExit): the job's
        # outcome stands and is recorded all the same.
        logger.warning("session=%s could not print the pipeline's end: %s", job.run_id, exc)
    return outcome


async def _report_end(
    store: CampaignStore,
    job: PipelineJob,
    outcome: PipelineOutcome,
    stream: StreamJsonProgress | None,
    console: Console,
    out: TextIO,
    started: float,
) -> None:
    summary = summary_text(outcome.executions, outcome.replayed)
    if stream is not None:
        stream.emit(
            {
                "type": "result",
                "subtype": "success" if outcome.success else "error_during_execution",
                "is_error": not outcome.success,
                "result": f"pipeline {outcome.status}: {outcome.reason}\n{summary}",
                "duration_ms": int((time.time() - started) * 1000),
                "num_turns": 0,
            }
        )
        sys.stderr.write(summary + "\n")
    else:
        console.print(summary_table(outcome.executions, outcome.replayed))
        console.print(f"pipeline {outcome.status}: {outcome.reason}")
        if outcome.replayed:
            console.print(f"{outcome.replayed} step execution(s) were recorded earlier and not run again")
        await anyio.to_thread.run_sync(_print_usage_report, store, job, console, out)


def _print_usage_report(store: CampaignStore, job: PipelineJob, console: Console, out: TextIO) -> None:
    """The job's three usage tables: a rich table on a terminal, markdown (to paste or log) otherwise."""
    report = campaign_report(store, job.campaign_id, job.job_name)
    if not report.steps:
        return
    if out.isatty():
        render_table(report, console)
    else:
        out.write("\n" + render_markdown(report))


async def _stop_on_signals(supervisor: Supervisor, signals: AsyncIterator[int]) -> None:
    async for received in signals:
        if supervisor.closing is not None:
            continue  # already stopping; this one only must not kill us mid-record
        name = signal.Signals(received).name
        # The runner sees its step end as cancelled, records it, and ends the walk.
        await supervisor.shut_down(f"the pipeline runner received {name}")
