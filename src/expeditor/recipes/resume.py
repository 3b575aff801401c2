"""Which recorded step executions a pipeline's next launch replays, and when it starts over instead.

DESIGN, "Settled points: Pipeline steps": a rerun replays the recorded executions that ended for
good (successes, skips, and failures the run routed on from), restoring their captures and visit
counts, and resumes at the first one that did not (still running when its runner died,
cancelled, or the failure that ended the run). A forced rerun, or one with other inputs, replays
nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from expeditor.recipes.schema import FAIL, STOP, Outcome, Recipe
from expeditor.state import DispatchRecord, DispatchStatus, StepExecution, StepStatus, inputs_hash

__all__ = ["Replay", "plan_replay", "steps_to_forget"]

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


def steps_to_forget(previous: DispatchRecord | None, inputs: Mapping[str, str], *, forced: bool) -> str | None:
    """Why a job's recorded step executions must not be replayed by its next launch; None to replay them.

    A forced rerun (or a relaunch of a job that succeeded) starts over; steps recorded under other
    inputs did other work, and their captures would lie to the steps after them.
    """
    if previous is None:
        return None
    if forced or previous.status is DispatchStatus.SUCCESS:
        return "a forced rerun starts the job over"
    if previous.inputs_hash != inputs_hash(dict(inputs)):
        return "the job's inputs changed since its steps were recorded, so it starts over"
    return None
