"""The dispatch service: one named job of a campaign, launched at most once and never rerun once it succeeded.

In this order (DESIGN, "Settled points: Dispatch"):
1. short-circuit: a recorded success returns at once, before any semaphore, lock or process;
2. claim: exactly one concurrent caller wins the launch; the others hear "already running" or,
   if it succeeded meanwhile, get the short-circuit. A running record whose owner died becomes
   ``interrupted`` and is relaunched, resuming its session when the transcript is still there;
3. launch, within ``max_concurrent_dispatches``, under a ``dispatch`` marker for the caller that
   expires at the dispatch deadline; the run's end is written to the record (fenced by attempt).
Lookups fail open; the claim does not: a launch nobody recorded would be repeated.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, Field

from expeditor.config import Settings
from expeditor.errors import ExpeditorError, InvalidInput
from expeditor.executor import RunControl, RunRequest, RunResult, SessionKind, Termination
from expeditor.executor.transcript import transcript_path
from expeditor.ids import new_session_id, validate_identifier
from expeditor.monitor import execution_marker
from expeditor.recipes import Orchestrator, Recipe, RecipeError, RecipeLibrary, orchestrator_prompt
from expeditor.recipes.resume import steps_to_forget
from expeditor.server.caller import CallerContext
from expeditor.server.child_config import settings_environment
from expeditor.server.supervisor import RunContext, Supervisor
from expeditor.state import CampaignStore, ClaimAction, DispatchRecord, DispatchStatus, Owner, RunStatus, inputs_hash
from expeditor.usage import SessionUsage
from expeditor.usage.aggregate import campaign_runs, job_usage

__all__ = ["DispatchOutcome", "DispatchService"]

logger = logging.getLogger(__name__)


class DispatchOutcome(BaseModel):
    """What a dispatch call did, and the job's record as it stands."""

    campaign_id: str
    name: str
    dispatch_id: str
    status: DispatchStatus
    short_circuited: bool = Field(default=False, description="A recorded success was returned; nothing ran.")
    inputs_changed: bool = Field(default=False, description="The recorded job ran with other inputs.")
    already_running: bool = Field(default=False, description="Another caller's launch of this job is live.")
    resumed: bool = Field(default=False, description="This attempt resumed the previous attempt's session.")
    attempts: int
    dispatched_session_id: str | None
    summary: str | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    usage: SessionUsage | None = None
    result: RunResult | None = Field(default=None, description="The orchestrator's run, when this call launched it.")
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
            message=message,
            **flags,
        )


class DispatchService:
    """Dispatches jobs through the supervisor, recording every step in the campaign store."""

    def __init__(self, settings: Settings, store: CampaignStore, supervisor: Supervisor, library: RecipeLibrary):
        self.settings = settings
        self.store = store
        self.supervisor = supervisor
        self.library = library
        self._slots = anyio.Semaphore(settings.max_concurrent_dispatches)

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
    ) -> DispatchOutcome:
        validate_identifier(campaign, what="campaign")
        validate_identifier(name, what="job name")
        done = await anyio.to_thread.run_sync(self.store.find_completed_dispatch, campaign, name)
        if done is not None and not force:
            return self._short_circuit(done, self._resolved_for_comparison(recipe, inputs))
        loaded, resolved, work_dir = self._prepare(recipe, inputs, cwd)
        previous = await anyio.to_thread.run_sync(self.store.get, campaign, name)
        claim = await anyio.to_thread.run_sync(
            functools.partial(
                self.store.claim,
                campaign,
                name,
                recipe=recipe,
                inputs=resolved,
                caller_session_id=caller.session_id,
                owner=Owner.current(),
                force=force,
            )
        )
        if claim.action is ClaimAction.SHORT_CIRCUIT:
            return self._short_circuit(claim.record, resolved)
        if claim.action is ClaimAction.ALREADY_RUNNING:
            return DispatchOutcome.of(
                claim.record,
                f"already running: {claim.reason}",
                already_running=True,
                inputs_changed=claim.inputs_changed,
            )
        forget = steps_to_forget(previous, resolved, forced=force)
        if loaded.orchestrator is Orchestrator.PIPELINE and forget is not None:
            cleared = await anyio.to_thread.run_sync(self.store.clear_steps, campaign, name)
            logger.info("%s/%s: forgot %d recorded step executions: %s", campaign, name, cleared, forget)
        async with self._slots:
            return await self._launch(
                claim.record, claim.prior_session_id, loaded, resolved, work_dir, caller, stale_threshold
            )

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
        self, recipe_name: str, inputs: Mapping[str, str], cwd: Path | None
    ) -> tuple[Recipe, dict[str, str], Path]:
        try:
            recipe = self.library.load(recipe_name)
            resolved = recipe.resolve_inputs(inputs)
        except RecipeError as exc:
            raise InvalidInput(str(exc)) from exc
        # Checked before the claim: a job must not be recorded as launched into a directory it may not use.
        work_dir = self.supervisor.executor.checked_cwd(cwd or self.settings.allowed_roots[0])
        return recipe, resolved, work_dir

    async def _launch(
        self,
        record: DispatchRecord,
        prior_session_id: str | None,
        recipe: Recipe,
        inputs: dict[str, str],
        work_dir: Path,
        caller: CallerContext,
        stale_threshold: float | None,
    ) -> DispatchOutcome:
        attempt = record.attempts
        if recipe.orchestrator is Orchestrator.PIPELINE:
            # The pipeline runner resumes from its step records, so every attempt is a fresh process.
            resume = False
            session_id = new_session_id()
            request = self._pipeline_request(record, recipe, inputs, work_dir, session_id, stale_threshold)
        else:
            resume = (
                prior_session_id is not None
                and transcript_path(self.settings.claude_config_dir, work_dir, prior_session_id).exists()
            )
            session_id = prior_session_id if resume and prior_session_id else new_session_id()
            request = self._orchestrator_request(recipe, inputs, work_dir, session_id, resume, stale_threshold)
        campaign, name = record.campaign_id, record.name
        await anyio.to_thread.run_sync(
            functools.partial(
                self.store.mark_running, campaign, name, attempt=attempt, dispatched_session_id=session_id
            )
        )
        deadline = time.time() + self.settings.dispatch_timeout + self.settings.kill_grace
        control = RunControl()
        context = RunContext(
            campaign_id=campaign,
            job_name=name,
            dispatch_id=record.dispatch_id,
            attempt=attempt,
            label="pipeline runner" if recipe.orchestrator is Orchestrator.PIPELINE else "orchestrator",
        )
        logger.info(
            "session=%s dispatch %s/%s attempt %d%s",
            session_id,
            campaign,
            name,
            attempt,
            " (resumed)" if resume else "",
        )
        try:
            async with execution_marker(
                self.settings.markers_path,
                "dispatch",
                caller.session_id,
                expires_at=deadline,
                heartbeat_interval=self.settings.marker_heartbeat_interval,
            ):
                result = await self.supervisor.run(request, caller, control=control, context=context)
        except ExpeditorError as exc:
            # Refused before it started (a prompt the CLI cannot take): a failure that says why.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(
                    functools.partial(self.store.mark_failed, campaign, name, attempt=attempt, error=str(exc))
                )
            raise
        except BaseException:
            with anyio.CancelScope(shield=True):
                reason = control.result.reason if control.result else "the dispatch call was cancelled"
                await anyio.to_thread.run_sync(
                    functools.partial(self.store.mark_cancelled, campaign, name, attempt=attempt, reason=reason)
                )
            raise
        # Shielded: a server stopping right now must not leave the job recorded "running".
        final: DispatchRecord | None = None
        with anyio.CancelScope(shield=True):
            final = await anyio.to_thread.run_sync(functools.partial(self._record_end, campaign, name, attempt, result))
        assert final is not None
        verb = {DispatchStatus.SUCCESS: "succeeded", DispatchStatus.CANCELLED: "was cancelled"}.get(
            final.status, "failed"
        )
        why = result.reason
        if recipe.orchestrator is Orchestrator.PIPELINE and result.termination is Termination.COMPLETED:
            # The runner's own verdict ("pipeline failure: step 'test' failed ...") says more than its exit.
            why = (result.result_text.strip().splitlines() or [why])[0]
        return DispatchOutcome.of(final, f"{campaign}/{name} {verb}: {why}", resumed=resume, result=result)

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

    def _record_end(self, campaign: str, name: str, attempt: int, result: RunResult) -> DispatchRecord:
        status = RunStatus.from_termination(result.termination, is_error=result.is_error)
        summary = result.result_text[-4000:] or None
        # What the job cost: its orchestrator (or pipeline steps) and every skill they ran, all attempts.
        usage = job_usage(campaign_runs(self.store, campaign, name))
        if status is RunStatus.SUCCESS:
            # A pipeline's outputs are its steps' captures, the latest value of each name winning.
            outputs: dict[str, str] = {}
            for execution in self.store.list_steps(campaign, name):
                outputs.update(execution.captures)
            return self.store.mark_succeeded(
                campaign, name, attempt=attempt, summary=summary, outputs=outputs, usage=usage
            )
        if status is RunStatus.CANCELLED:
            return self.store.mark_cancelled(campaign, name, attempt=attempt, reason=result.reason, usage=usage)
        return self.store.mark_failed(
            campaign, name, attempt=attempt, error=result.reason, summary=summary, usage=usage
        )
