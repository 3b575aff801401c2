"""Which recorded step executions a pipeline's next launch replays.

DESIGN, "Settled points: Pipeline steps": a rerun replays the recorded executions that ended for
good (successes, skips, and failures the run routed on from), restoring their captures and visit
counts, and resumes at the first one that did not (still running when its runner died,
cancelled, or the failure that ended the run). When a job starts over
instead (forced, or other inputs) is the job lifecycle's call: ``expeditor.runs.jobs.steps_to_forget``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from expeditor.recipes.schema import FAIL, STOP, Outcome, Recipe
from expeditor.state import StepExecution, StepStatus

__all__ = ["Replay", "plan_replay"]

_OUTCOME_OF: dict[StepStatus, Outcome] = {
    StepStatus.SUCCESS: "success",
    StepStatus.FAILURE: "failure",
    StepStatus.SKIPPED: "skipped",
}


@dataclass
class Replay:
    """Where a walk stands after replaying what was recorded."""

    next_step: str
    executions: list[StepExecution] = field(default_factory=list[StepExecution])
    captures: dict[str, str] = field(default_factory=dict[str, str])
    visits: Counter[str] = field(default_factory=Counter[str])
    diverged: StepExecution | None = None
    """A recorded execution of a step the recipe no longer goes to (the recipe changed)."""


def plan_replay(recipe: Recipe, recorded: Sequence[StepExecution]) -> Replay:
    """Replay ``recorded`` (in order of sequence) along ``recipe``'s routes as far as it ended for good."""
    replay = Replay(next_step=recipe.first_step)
    for execution in recorded:
        current = replay.next_step
        if current in (STOP, FAIL) or execution.sequence != len(replay.executions) + 1:
            break
        if execution.step != current:
            replay.diverged = execution
            break
        outcome = _OUTCOME_OF.get(execution.status)
        if outcome is None or recipe.route(current, outcome) == FAIL:
            break  # it did not end for good: this is where the run resumes
        replay.captures.update(execution.captures)
        replay.visits[current] += 1
        replay.executions.append(execution)
        replay.next_step = recipe.route(current, outcome)
    return replay
