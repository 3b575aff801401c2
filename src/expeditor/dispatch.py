"""The dispatch service: one named job of a campaign, launched at most once and never rerun once it succeeded.

In this order (DESIGN, "Settled points: Dispatch"):
1. short-circuit: a recorded success returns at once, before any semaphore, lock or process;
2. claim: exactly one concurrent caller wins the launch; the others hear "already running" or,
   if it succeeded meanwhile, get the short-circuit. A running record whose owner died becomes
   ``interrupted`` and is relaunched, resuming its session when the transcript is still there;
3. launch, within ``max_concurrent_dispatches``, under a ``dispatch`` marker for the caller that
   expires at the dispatch deadline; the run's end is written to the record (fenced by attempt).
Lookups fail open; the claim does not: a launch nobody recorded would be repeated.

The claim, the concurrency limit and the recorded end are the job lifecycle's
(``expeditor.runs.jobs``), shared with ``expeditor recipe run``; this module decides what a
recipe's job runs (an agent orchestrator, or the pipeline runner) and what the caller is told.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
from pydantic import BaseModel, Field, ValidationError

from expeditor.claude_paths import transcript_path
from expeditor.config import Settings
from expeditor.errors import InvalidInput
from expeditor.executor import RunControl, RunRequest, RunResult, SessionKind, Termination
from expeditor.ids import new_session_id, validate_identifier
from expeditor.recipes import Orchestrator, Recipe, RecipeError, RecipeLibrary, orchestrator_prompt
from expeditor.runs import (
    CallerContext,
    ClaimedJob,
    JobEnd,
    MarkRunning,
    RunContext,
    Runtime,
    ended_by,
    open_runtime,
    settings_environment,
)
from expeditor.runs.budgets import check_budgets
from expeditor.runs.commands import print_result, say_launch_hint
from expeditor.runs.worktrees import Isolation, JobWorktree, finish_worktree, isolatable_project, prepare_worktree
from expeditor.state import ClaimAction, DispatchRecord, DispatchStatus, RunStatus, inputs_hash
from expeditor.usage import SessionUsage

__all__ = ["DISPATCH_MARKER_LABEL", "DispatchOutcome", "DispatchService", "dispatch_command"]

logger = logging.getLogger(__name__)

DISPATCH_MARKER_LABEL = "dispatch"


class DispatchOutcome(BaseModel):
    """What a dispatch call did, and the job's record as it stands."""

    campaign_id: str = Field(description="The job's campaign.")
    name: str = Field(description="The job's name within its campaign.")
    dispatch_id: str = Field(description="The job record's id, stable across attempts.")
    status: DispatchStatus = Field(description="The job's status now: success, failure, running, cancelled, ...")
    short_circuited: bool = Field(default=False, description="A recorded success was returned; nothing ran.")
    inputs_changed: bool = Field(default=False, description="The recorded job ran with other inputs.")
    already_running: bool = Field(default=False, description="Another caller's launch of this job is live.")
    resumed: bool = Field(default=False, description="This attempt resumed the previous attempt's session.")
    attempts: int = Field(description="Attempts made at the job so far, this one included.")
    dispatched_session_id: str | None = Field(description="The session of its latest attempt.")
    summary: str | None = Field(default=None, description="The final text of its latest finished attempt.")
    outputs: dict[str, Any] = Field(default_factory=dict, description="What the job captured.")
    usage: SessionUsage | None = Field(
        default=None,
        description="The job's recorded token usage (every attempt); null when it is the same as result.usage.",
    )
    result: RunResult | None = Field(default=None, description="The orchestrator's run, when this call launched it.")
    record_error: str | None = Field(
        default=None,
        description="Why the run's end could not be recorded (the store could not be written); the job may "
        "then run again on the next dispatch. None once it is on record.",
    )
    worktree: str | None = Field(default=None, description="The git worktree the job runs in, when isolated.")
    branch: str | None = Field(default=None, description="The git branch holding the isolated job's commits.")
    message: str = Field(description="One sentence saying what happened.")

    @classmethod
    def of(cls, record: DispatchRecord, message: str, **flags: Any) -> DispatchOutcome:
        return cls(
            campaign_id=record.campaign_id,
            name=record.name,
            dispatch_id=record.dispatch_id,
            status=record.status,
            attempts=record.attempts,
            dispatched_session_id=record.dispatched_session_id,
            summary=record.result_summary,
            outputs=dict(record.outputs or {}),
            usage=record.usage,
            worktree=record.worktree,
            branch=record.branch,
            message=message,
            **flags,
        )


class DispatchService:
    """Dispatches jobs through the runtime's job lifecycle and supervisor; recipes say what each job runs."""

    def __init__(self, runtime: Runtime, library: RecipeLibrary | None = None) -> None:
        self.runtime = runtime
        self.settings: Settings = runtime.settings
        self.library = library or RecipeLibrary.from_settings(runtime.settings)

    async def dispatch(
        self,
        campaign: str,
        name: str,
        recipe: str,
        inputs: Mapping[str, str],
        *,
        caller: CallerContext,
        force: bool = False,
        cwd: Path | None = None,
        stale_threshold: float | None = None,
        control: RunControl | None = None,
        isolation: Isolation | None = None,
    ) -> DispatchOutcome:
        """Run the job once. ``control`` is the launched run's handle for whoever reports its progress;
        ``isolation`` overrides the recipe's."""
        validate_identifier(campaign, what="campaign")
        validate_identifier(name, what="job name")
        jobs = self.runtime.jobs
        done = await jobs.completed(campaign, name)
        if done is not None and not force:
            return self._short_circuit(done, self._resolved_for_comparison(recipe, inputs))
        loaded, resolved, work_dir = self._prepare(recipe, inputs, cwd, stale_threshold)
        isolated = (isolation or loaded.isolation) is Isolation.WORKTREE
        if isolated:
            await anyio.to_thread.run_sync(isolatable_project, self.settings, work_dir)  # refused before the claim
        # A spent budget (the campaign's, or the job's own) is refused before the claim: nothing launches.
        limits = (loaded.max_budget_usd, loaded.max_tokens)
        store = self.runtime.store
        await anyio.to_thread.run_sync(
            functools.partial(check_budgets, self.settings, store, campaign, name, recipe=recipe, limits=limits)
        )
        claimed = await jobs.claim(
            campaign,
            name,
            recipe=recipe,
            inputs=resolved,
            caller_session_id=caller.session_id,
            force=force,
            replays_steps=loaded.orchestrator is Orchestrator.PIPELINE,
        )
        claim = claimed.claim
        if claim.action is ClaimAction.SHORT_CIRCUIT:
            return self._short_circuit(claim.record, resolved)
        if claim.action is ClaimAction.ALREADY_RUNNING:
            return DispatchOutcome.of(
                claim.record,
                f"already running: {claim.reason}",
                already_running=True,
                inputs_changed=claim.inputs_changed,
            )
        launch = _Launch(claimed, loaded, resolved, work_dir, isolated)
        return await self._launch(launch, caller, stale_threshold, control or RunControl())

    def _short_circuit(self, record: DispatchRecord, inputs: Mapping[str, str]) -> DispatchOutcome:
        changed = record.inputs_hash != inputs_hash(dict(inputs))
        message = f"{record.campaign_id}/{record.name} already succeeded (attempt {record.attempts}); nothing was run"
        if changed:
            message += "; it ran with other inputs: pass force=true to run it again with these"
        return DispatchOutcome.of(record, message, short_circuited=True, inputs_changed=changed)

    def _resolved_for_comparison(self, recipe_name: str, inputs: Mapping[str, str]) -> Mapping[str, str]:
        """The inputs with the recipe's defaults, as they were recorded; the raw inputs if the recipe is unusable.

        A recorded success is returned whatever happens here: the comparison only sets ``inputs_changed``.
        """
        try:
            return self.library.load(recipe_name).resolve_inputs(inputs)
        except RecipeError:
            return inputs

    def _prepare(
        self, recipe_name: str, inputs: Mapping[str, str], cwd: Path | None, stale_threshold: float | None
    ) -> tuple[Recipe, dict[str, str], Path]:
        """Everything a launch needs that can be refused, refused before the claim: a job must not be
        recorded as claimed for a launch that cannot happen."""
        recipe = self.library.load(recipe_name)
        resolved = recipe.resolve_inputs(inputs)
        try:
            self.settings.run_policy(timeout=self.settings.dispatch_timeout, stale_threshold=stale_threshold)
        except ValidationError as exc:
            problem = exc.errors()[0]
            raise InvalidInput(f"stale_threshold {stale_threshold}: {problem['msg']}") from None
        work_dir = self.runtime.executor.checked_cwd(cwd or self.settings.allowed_roots[0])
        return recipe, resolved, work_dir

    async def _launch(
        self, launch: _Launch, caller: CallerContext, stale_threshold: float | None, control: RunControl
    ) -> DispatchOutcome:
        claimed, recipe, inputs = launch.claimed, launch.recipe, launch.inputs
        record = claimed.record
        campaign, name, attempt = record.campaign_id, record.name, claimed.claim.attempt
        prior_session_id = claimed.claim.prior_session_id
        pipeline = recipe.orchestrator is Orchestrator.PIPELINE
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
            nonlocal resume, worktree
            work_dir = launch.work_dir
            if launch.isolated:
                worktree = await anyio.to_thread.run_sync(prepare_worktree, self.settings, work_dir, campaign, name)
                work_dir = await anyio.to_thread.run_sync(worktree.directory_for, work_dir)
            # The pipeline runner resumes from its step records, so every attempt of it is a fresh process.
            resume = (
                not pipeline
                and prior_session_id is not None
                and transcript_path(self.settings.claude_config_dir, work_dir, prior_session_id).exists()
            )
            session_id = prior_session_id if resume and prior_session_id else new_session_id()
            if pipeline:
                request = self._pipeline_request(record, recipe, inputs, work_dir, session_id, stale_threshold)
            else:
                request = self._orchestrator_request(recipe, inputs, work_dir, session_id, resume, stale_threshold)
            logger.info(
                "session=%s dispatch %s/%s attempt %d%s", session_id, campaign, name, attempt, " (resumed)" * resume
            )
            where = {} if worktree is None else {"worktree": str(worktree.path), "branch": worktree.branch}
            await mark_running(session_id, **where)
            result = await self.runtime.supervisor.run(
                request, caller, marker=DISPATCH_MARKER_LABEL, control=control, context=context
            )
            return _job_end(result)

        def stopped(exc: BaseException) -> JobEnd:
            if control.result is not None:
                # The session ended and said how: that verdict stands, whatever stopped this call afterwards.
                return _job_end(control.result)
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                return JobEnd(RunStatus.CANCELLED, "the dispatch call was cancelled")
            return ended_by(exc)

        recorded = await self.runtime.jobs.launch(claimed, attempt_body, stopped=stopped)
        final = recorded.record
        result = control.result
        assert result is not None
        verdict = {DispatchStatus.SUCCESS: "succeeded", DispatchStatus.CANCELLED: "was cancelled"}.get(
            final.status, "failed"
        )
        why = result.reason
        if pipeline and result.termination is Termination.COMPLETED:
            # The runner's own verdict ("pipeline failure: step 'test' failed ...") says more than its exit.
            why = (result.result_text.strip().splitlines() or [why])[0]
        message = f"{campaign}/{name} {verdict}: {why}"
        if worktree is not None:
            succeeded = final.status is DispatchStatus.SUCCESS
            finish = functools.partial(
                finish_worktree, worktree, succeeded=succeeded, keep=recipe.keep_worktree, job=f"{campaign}/{name}"
            )
            message += "; " + await anyio.to_thread.run_sync(finish)
        if recorded.error is not None:
            message += f"; but {recorded.error}, so the next dispatch may run it again"
        return DispatchOutcome.of(final, message, resumed=resume, result=result, record_error=recorded.error)

    def _orchestrator_request(
        self,
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
            timeout=self.settings.dispatch_timeout,
            stale_threshold=stale_threshold,
        )

    def _pipeline_request(
        self,
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
            timeout=self.settings.dispatch_timeout,
            stale_threshold=stale_threshold,
            env=settings_environment(self.settings),
        )


@dataclass(frozen=True)
class _Launch:
    """A claimed job and what its launch runs: the recipe, its inputs, the project, and whether it is isolated."""

    claimed: ClaimedJob
    recipe: Recipe
    inputs: dict[str, str]
    work_dir: Path
    isolated: bool


def _job_end(result: RunResult) -> JobEnd:
    """The job's end as its run says: a pipeline's outputs are its recorded steps' captures (None reads them)."""
    status = RunStatus.from_termination(result.termination, is_error=result.is_error)
    return JobEnd(status, result.reason, summary=result.result_text[-4000:] or None)


def dispatch_command(
    settings: Settings,
    campaign: str,
    name: str,
    recipe: str,
    inputs: Mapping[str, str],
    *,
    caller: CallerContext,
    force: bool,
    cwd: Path | None,
    stale_threshold: float | None,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    isolation: Isolation | None = None,
) -> int:
    """``expeditor dispatch``: run the job and print its outcome; 0 when it succeeded or already runs, else 1."""

    async def run() -> DispatchOutcome:
        async with open_runtime(settings, owner_kind="dispatch") as runtime:
            return await DispatchService(runtime).dispatch(
                campaign,
                name,
                recipe,
                inputs,
                caller=caller,
                force=force,
                cwd=cwd,
                stale_threshold=stale_threshold,
                isolation=isolation,
            )

    outcome = anyio.run(run)
    if as_json:
        out.write(outcome.model_dump_json(indent=2) + "\n")
    else:
        out.write(
            f"{outcome.campaign_id}/{outcome.name}: {outcome.status.value} (attempt {outcome.attempts}, "
            f"dispatch {outcome.dispatch_id}, session {outcome.dispatched_session_id})\n{outcome.message}\n"
        )
    if outcome.result is not None:
        say_launch_hint(outcome.result, settings, err)
    if outcome.record_error is not None:
        # The run finished; only its record is missing. Its result is all there is of it: show it whole.
        if outcome.result is not None and not as_json:
            print_result(outcome.result, out, as_json=False)
        err.write(f"expeditor: {outcome.record_error}\n")
        return 1
    return 0 if outcome.status is DispatchStatus.SUCCESS or outcome.already_running else 1
