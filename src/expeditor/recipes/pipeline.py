"""The pipeline runner: walks a recipe's steps itself, one managed session (or command) per attempt.

Every execution of a step is recorded in the campaign store under (campaign, job) with its
sequence number, so a run that died can be resumed: a rerun replays what ended for good
(``resume.py`` says what that is) and runs again from there. Records after that point are
forgotten: the new walk writes its own.

While a step runs, the runner holds a ``pipeline-step`` execution marker keyed on the pipeline
run's own id. A pipeline dispatched as a managed child is watched like any session, and its
supervisor sees the marker and knows the silent child is waiting on a step, not stuck.
"""

from __future__ import annotations

import functools
import logging
import shlex
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio

from expeditor.config import Settings
from expeditor.errors import BudgetSpent, ExpeditorError
from expeditor.executor import RunRequest, RunResult, SessionKind, Termination
from expeditor.ids import new_session_id
from expeditor.recipes.captures import AttemptVerdict, judge_attempt
from expeditor.recipes.observer import GuardedObserver, PipelineObserver, SilentObserver
from expeditor.recipes.placeholders import substitute, substitute_argv
from expeditor.recipes.problems import RecipeError
from expeditor.recipes.resume import plan_replay
from expeditor.recipes.schema import DEFAULT_MAX_VISITS, FAIL, STOP, Outcome, Recipe
from expeditor.runs import CallerContext, RunContext, Supervisor, check_budgets
from expeditor.state import CampaignStore, StepExecution, StepStatus
from expeditor.usage import SessionUsage

__all__ = ["STEP_MARKER_LABEL", "PipelineJob", "PipelineOutcome", "PipelineRunner"]

logger = logging.getLogger(__name__)

STEP_MARKER_LABEL = "pipeline-step"

PipelineStatus = Literal["success", "failure", "cancelled"]


@dataclass(frozen=True)
class PipelineJob:
    """One run of a recipe as a pipeline: what to run, where, and under which identity.

    ``run_id`` is the pipeline run's own session id: its steps' markers are keyed on it and
    its steps name it as their caller.
    """

    recipe: Recipe
    inputs: Mapping[str, str]
    campaign_id: str
    job_name: str
    cwd: Path
    run_id: str


@dataclass
class PipelineOutcome:
    """How a pipeline run ended, and every execution of its walk (replayed ones included)."""

    status: PipelineStatus
    reason: str
    executions: list[StepExecution]
    replayed: int
    captures: dict[str, str]

    @property
    def success(self) -> bool:
        return self.status == "success"


class _Ended(Exception):
    """The walk reached a verdict for the whole run."""

    def __init__(self, status: PipelineStatus, reason: str) -> None:
        super().__init__(reason)
        self.status: PipelineStatus = status
        self.reason = reason


class PipelineRunner:
    """Runs one pipeline job through the supervisor, recording each step execution as it goes."""

    def __init__(
        self,
        settings: Settings,
        store: CampaignStore,
        supervisor: Supervisor,
        job: PipelineJob,
        observer: PipelineObserver | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.supervisor = supervisor
        self.job = job
        self.observer: PipelineObserver = GuardedObserver(observer or SilentObserver())
        self._captures: dict[str, str] = {}
        self._visits: Counter[str] = Counter()
        self._executions: list[StepExecution] = []

    async def run(self) -> PipelineOutcome:
        """Replay what is recorded, then run the rest. Cancelling this call kills the running step first."""
        recipe = self.job.recipe
        current, replayed = await self._replay()
        try:
            while current not in (STOP, FAIL):
                outcome = await self._execute(current, len(self._executions) + 1)
                current = recipe.route(current, outcome)
            status: PipelineStatus = "success" if current == STOP else "failure"
            reason = self._ending_reason(status)
        except _Ended as ended:
            status = ended.status
            reason = ended.reason
        return PipelineOutcome(
            status=status,
            reason=reason,
            executions=list(self._executions),
            replayed=replayed,
            captures=dict(self._captures),
        )

    # --- replay ------------------------------------------------------------------------

    async def _replay(self) -> tuple[str, int]:
        job = self.job
        recorded = await anyio.to_thread.run_sync(self.store.list_steps, job.campaign_id, job.job_name)
        replay = plan_replay(job.recipe, recorded)
        if replay.diverged is not None:
            logger.warning(
                "session=%s %s/%s: recorded step %d is %r but the recipe now goes to %r; running from there",
                job.run_id,
                job.campaign_id,
                job.job_name,
                replay.diverged.sequence,
                replay.diverged.step,
                replay.next_step,
            )
        self._captures.update(replay.captures)
        self._visits.update(replay.visits)
        for execution in replay.executions:
            self._executions.append(execution)
            self.observer.replayed(execution)
        current = replay.next_step
        replayed = len(self._executions)
        if len(recorded) > replayed:
            await anyio.to_thread.run_sync(
                functools.partial(self.store.clear_steps, job.campaign_id, job.job_name, from_sequence=replayed + 1)
            )
        return current, replayed

    # --- one step ----------------------------------------------------------------------

    async def _execute(self, name: str, sequence: int) -> Outcome:
        recipe, job = self.job.recipe, self.job
        step = recipe.steps[name]
        self._visits[name] += 1
        limit = step.max_visits or DEFAULT_MAX_VISITS
        if self._visits[name] > limit:
            raise _Ended(
                "failure",
                f"step {name!r} would run a {self._visits[name]}th time; its limit is {limit} (max_visits). "
                "A rerun replays the same loop: run it with --force (or dispatch with force) to start over",
            )
        started = time.time()
        if step.when is not None and not step.when.holds(job.inputs, self._captures):
            skipped = self._execution(
                sequence, name, StepStatus.SKIPPED, started, reason=f"when {step.when.describe()}"
            )
            await self._record(skipped)
            self.observer.step_finished(skipped, None)
            return "skipped"
        values = {**job.inputs, **self._captures}
        where = f"step {name!r} of recipe {recipe.name!r}"
        try:
            argv = substitute_argv(step.run, values, where=where) if step.run is not None else None
            # A command is shown as a shell would read it back, so its real argv can be told from it.
            prompt = shlex.join(argv) if argv is not None else substitute(step.skill or "", values, where=where)
        except RecipeError as exc:
            failed = self._execution(sequence, name, StepStatus.FAILURE, started, reason=str(exc))
            await self._record(failed)
            self.observer.step_finished(failed, None)
            return "failure"
        return await self._attempts(name, sequence, started, prompt, argv)

    async def _attempts(self, name: str, sequence: int, started: float, prompt: str, argv: list[str] | None) -> Outcome:
        recipe, job = self.job.recipe, self.job
        step = recipe.steps[name]
        effective = recipe.step_settings(name, self.settings)
        usage = SessionUsage()
        result: RunResult | None = None
        verdict: AttemptVerdict | None = None
        running: StepExecution | None = None
        caller = CallerContext(session_id=job.run_id, kind=SessionKind.PIPELINE)
        context = RunContext(campaign_id=job.campaign_id, job_name=job.job_name, step_sequence=sequence, label=name)
        for attempt in range(1, step.retries + 2):
            if self.supervisor.closing is not None:
                reason = f"stopped before step {name!r} could start: {self.supervisor.closing}"
                if running is not None:  # between two attempts
                    await self._end(running, StepStatus.CANCELLED, reason, usage=usage, announce=False)
                raise _Ended("cancelled", reason)
            await self._check_budgets(name, running, usage)
            session_id = new_session_id()
            running = self._execution(
                sequence, name, StepStatus.RUNNING, started, run_id=session_id, attempts=attempt, usage=usage
            )
            await self._record(running)
            self.observer.step_started(sequence, name, attempt, session_id, prompt)
            request = RunRequest(
                prompt=prompt,
                argv=tuple(argv) if argv is not None else None,
                cwd=job.cwd,
                kind=SessionKind.SKILL if argv is None else SessionKind.COMMAND,
                model=effective.model if argv is None else None,
                session_id=session_id,
                stale_threshold=effective.stale_threshold,
                idle_timeout=effective.stale_threshold,
                timeout=effective.timeout,
                output_schema=step.output_schema if argv is None else None,
                max_budget_usd=step.max_budget_usd if argv is None else None,
            )
            try:
                result = await self.supervisor.run(request, caller, marker=STEP_MARKER_LABEL, context=context)
            except ExpeditorError as exc:
                # Refused before it started (a prompt the CLI cannot take, a directory that went
                # away): retrying cannot help, and the run goes on along the step's failure route.
                await self._end(running, StepStatus.FAILURE, str(exc))
                return "failure"
            except BaseException:
                with anyio.CancelScope(shield=True):
                    reason = "the pipeline was stopped while this step ran"
                    await self._end(running, StepStatus.CANCELLED, reason, announce=False, quiet=True)
                raise
            usage = usage + result.usage
            if result.termination is Termination.CANCELLED:
                await self._end(running, StepStatus.CANCELLED, result.reason, usage=usage, result=result)
                raise _Ended("cancelled", f"step {name!r} was cancelled: {result.reason}")
            verdict = judge_attempt(result, step)
            if verdict.success:
                break
            if attempt <= step.retries:
                logger.info(
                    "session=%s step %s attempt %d failed (%s); retrying", session_id, name, attempt, verdict.reason
                )
        assert result is not None
        assert verdict is not None
        assert running is not None
        status = StepStatus.SUCCESS if verdict.success else StepStatus.FAILURE
        self._captures.update(verdict.captures)
        await self._end(running, status, verdict.reason, usage=usage, result=result, captures=verdict.captures)
        return "success" if verdict.success else "failure"

    async def _check_budgets(self, name: str, running: StepExecution | None, usage: SessionUsage) -> None:
        """A spent budget (the campaign's or the job's) ends the walk before the step, or its next attempt."""
        job, recipe = self.job, self.job.recipe
        check = functools.partial(
            check_budgets,
            self.settings,
            self.store,
            job.campaign_id,
            job.job_name,
            recipe=recipe.name,
            limits=(recipe.max_budget_usd, recipe.max_tokens),
        )
        try:
            await anyio.to_thread.run_sync(check)
        except BudgetSpent as exc:
            reason = f"stopped before step {name!r}: {exc}"
            if running is not None:  # between two attempts
                await self._end(running, StepStatus.FAILURE, reason, usage=usage, announce=False)
            raise _Ended("failure", reason) from None

    async def _end(
        self,
        running: StepExecution,
        status: StepStatus,
        reason: str,
        *,
        usage: SessionUsage | None = None,
        result: RunResult | None = None,
        captures: dict[str, str] | None = None,
        announce: bool = True,
        quiet: bool = False,
    ) -> None:
        """Record how a running step execution ended and, when ``announce``, tell the observer."""
        update: dict[str, object] = {"status": status, "finished_at": time.time(), "reason": reason}
        if usage is not None:
            update["usage"] = usage
        if captures is not None:
            update["captures"] = captures
        ended = running.model_copy(update=update)
        await self._record(ended, quiet=quiet)
        if announce:
            self.observer.step_finished(ended, result)

    # --- records -----------------------------------------------------------------------

    def _execution(
        self,
        sequence: int,
        step: str,
        status: StepStatus,
        started: float,
        *,
        run_id: str | None = None,
        attempts: int = 0,
        usage: SessionUsage | None = None,
        reason: str | None = None,
    ) -> StepExecution:
        ended = None if status is StepStatus.RUNNING else time.time()
        return StepExecution(
            campaign_id=self.job.campaign_id,
            job_name=self.job.job_name,
            sequence=sequence,
            step=step,
            status=status,
            run_id=run_id,
            started_at=started,
            finished_at=ended,
            attempts=attempts,
            usage=usage,
            reason=reason,
        )

    async def _record(self, execution: StepExecution, *, quiet: bool = False) -> None:
        """Write ``execution`` (replacing its earlier state) and keep it as the walk's latest."""
        if self._executions and self._executions[-1].sequence == execution.sequence:
            self._executions[-1] = execution
        else:
            self._executions.append(execution)
        try:
            await anyio.to_thread.run_sync(self.store.record_step, execution)
        except Exception:
            if not quiet:
                raise
            logger.exception(
                "session=%s could not record step %s as %s", self.job.run_id, execution.step, execution.status
            )

    def _ending_reason(self, status: PipelineStatus) -> str:
        last = self._executions[-1] if self._executions else None
        ran = len(self._executions)
        if status == "success":
            return f"all {ran} step executions ended and the recipe reached stop"
        if last is None:
            return "the recipe failed before any step ran"
        return f"step {last.step!r} failed and routed to fail: {last.reason or 'no reason recorded'}"
