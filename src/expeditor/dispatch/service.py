"""The dispatch service: one named job of a campaign, launched at most once and never rerun once it succeeded.

In this order (DESIGN, "Settled points: Dispatch"):
1. short-circuit: a recorded success returns at once, before any semaphore, lock or process;
2. validate: the recipe loads, the inputs resolve, ``cwd`` is allowed: refused before any claim;
3. claim: exactly one concurrent caller wins the launch; the others hear "already running" or,
   if it succeeded meanwhile, get the short-circuit. A running record whose owner died becomes
   ``interrupted`` and is relaunched, resuming its session when the transcript is still there;
4. launch, by one of two launchers: the local one runs the attempt here (``dispatch.attempt``), within
   ``max_concurrent_dispatches``; the queue one (``expeditor.queue``) defers a job in the claim's
   transaction and waits for whichever worker runs it.
Lookups fail open; the claim does not: a launch nobody recorded would be repeated.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio
from pydantic import ValidationError

from expeditor.config import Settings
from expeditor.dispatch.attempt import run_attempt
from expeditor.dispatch.outcome import DispatchOutcome
from expeditor.errors import InvalidInput
from expeditor.executor import RunControl
from expeditor.ids import validate_identifier
from expeditor.recipes import Orchestrator, Recipe, RecipeError, RecipeLibrary
from expeditor.runs import CallerContext, ClaimedJob, Runtime
from expeditor.runs.budgets import check_budgets
from expeditor.runs.worktrees import Isolation, isolatable_project
from expeditor.state import ClaimAction, DispatchRecord, OnLaunchHook, inputs_hash

__all__ = ["DispatchService", "Launcher", "LocalLauncher", "PreparedJob"]


@dataclass(frozen=True)
class PreparedJob:
    """What a claimed launch runs, checked before the claim."""

    recipe: Recipe
    inputs: dict[str, str]
    work_dir: Path
    stale_threshold: float | None
    isolated: bool = False  # in a git worktree of its own (``isolation: worktree``)


class Launcher(Protocol):
    """Runs a claimed job: here (local) or through the queue, on whichever worker is free."""

    def checked_cwd(self, cwd: Path) -> Path:
        """``cwd`` as the launch will use it, or InvalidInput."""
        ...

    def claim_hook(self, job: PreparedJob) -> OnLaunchHook | None:
        """What must commit with a launching claim (the queue's job), or None."""
        ...

    async def launch(
        self, claimed: ClaimedJob, job: PreparedJob, caller: CallerContext, control: RunControl
    ) -> DispatchOutcome:
        """Run (or wait for) the claimed attempt and say how it ended."""
        ...


class LocalLauncher:
    """Runs the claimed attempt in this process, within ``max_concurrent_dispatches``."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def checked_cwd(self, cwd: Path) -> Path:
        return self.runtime.executor.checked_cwd(cwd)

    def claim_hook(self, job: PreparedJob) -> OnLaunchHook | None:
        return None

    async def launch(
        self, claimed: ClaimedJob, job: PreparedJob, caller: CallerContext, control: RunControl
    ) -> DispatchOutcome:
        return await run_attempt(
            self.runtime,
            claimed,
            job.recipe,
            job.inputs,
            job.work_dir,
            caller,
            stale_threshold=job.stale_threshold,
            control=control,
            isolated=job.isolated,
        )


class DispatchService:
    """Dispatches jobs through the runtime's job lifecycle; recipes say what each job runs, the launcher where."""

    def __init__(
        self, runtime: Runtime, library: RecipeLibrary | None = None, *, launcher: Launcher | None = None
    ) -> None:
        self.runtime = runtime
        self.settings: Settings = runtime.settings
        self.library = library or RecipeLibrary.from_settings(runtime.settings)
        self.launcher: Launcher = launcher or LocalLauncher(runtime)

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
        job = self.prepare(recipe, inputs, cwd, stale_threshold, isolation)
        if job.isolated and job.work_dir.is_dir():
            # Refused before the claim. In queue mode a cwd absent here is the worker's to check.
            await anyio.to_thread.run_sync(isolatable_project, self.settings, job.work_dir)
        # A spent budget (the campaign's, or the job's own) is refused before the claim: nothing launches.
        limits = (job.recipe.max_budget_usd, job.recipe.max_tokens)
        await anyio.to_thread.run_sync(
            functools.partial(
                check_budgets, self.settings, self.runtime.store, campaign, name, recipe=recipe, limits=limits
            )
        )
        claimed = await jobs.claim(
            campaign,
            name,
            recipe=recipe,
            inputs=job.inputs,
            caller_session_id=caller.session_id,
            force=force,
            replays_steps=job.recipe.orchestrator is Orchestrator.PIPELINE,
            on_launch=self.launcher.claim_hook(job),
        )
        claim = claimed.claim
        if claim.action is ClaimAction.SHORT_CIRCUIT:
            return self._short_circuit(claim.record, job.inputs)
        if claim.action is ClaimAction.ALREADY_RUNNING:
            return DispatchOutcome.of(
                claim.record,
                f"already running: {claim.reason}",
                already_running=True,
                inputs_changed=claim.inputs_changed,
                host=claim.record.owner.host if claim.record.owner else None,
            )
        return await self.launcher.launch(claimed, job, caller, control or RunControl())

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

    def prepare(
        self,
        recipe_name: str,
        inputs: Mapping[str, str],
        cwd: Path | None,
        stale_threshold: float | None,
        isolation: Isolation | None = None,
    ) -> PreparedJob:
        """Everything a launch needs that can be refused, refused before the claim: a job must not be
        recorded as claimed for a launch that cannot happen."""
        recipe = self.library.load(recipe_name)
        resolved = recipe.resolve_inputs(inputs)
        try:
            self.settings.run_policy(timeout=self.settings.dispatch_timeout, stale_threshold=stale_threshold)
        except ValidationError as exc:
            problem = exc.errors()[0]
            raise InvalidInput(f"stale_threshold {stale_threshold}: {problem['msg']}") from None
        work_dir = self.launcher.checked_cwd(cwd or self.settings.allowed_roots[0])
        isolated = (isolation or recipe.isolation) is Isolation.WORKTREE
        return PreparedJob(recipe, resolved, work_dir, stale_threshold, isolated)
