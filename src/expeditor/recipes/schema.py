"""The recipe schema: inputs, defaults and an ordered mapping of steps, and how a runner walks it.

A runner starts at the first step. A step whose ``when`` is false is skipped: the run goes
on with the next step in file order. Otherwise the step runs (a failed attempt is retried
up to ``retries`` more times); it then routes by its outcome: ``on_success`` (default: the
next step in order, or ``stop`` after the last) or ``on_failure`` (default: ``fail``).
``stop`` ends the run as a success, ``fail`` as a failure. A step visited more than
``max_visits`` times (default ``DEFAULT_MAX_VISITS``) fails the run, which bounds loops.
Captures persist across steps; the
latest value of a name wins; a declared capture the result does not report stays unset
(not a failure), so a placeholder needing it fails when substituted. A skill step with
``output_schema`` answers with an object that must match it (``captures.judge_attempt``): a
missing or mismatched answer fails the attempt. Model, stale
threshold and timeout fall back from the step to the recipe's ``defaults`` to the settings.

Build recipes with :func:`expeditor.recipes.parse_recipe`, which also checks the rules that
span steps (routes, reachability, loops, placeholders); the models alone check each field.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from expeditor.config import Settings, validate_model
from expeditor.errors import InvalidInput
from expeditor.executor.structured_output import checked_output_schema, schema_properties
from expeditor.recipes.conditions import Condition
from expeditor.recipes.problems import RecipeError
from expeditor.runs.worktrees import Isolation

__all__ = [
    "DEFAULT_MAX_VISITS",
    "FAIL",
    "STOP",
    "TERMINALS",
    "Defaults",
    "InputSpec",
    "Orchestrator",
    "Outcome",
    "Recipe",
    "Step",
    "StepSettings",
    "validate_recipe_name",
]

STOP = "stop"
FAIL = "fail"
DEFAULT_MAX_VISITS = 10
"""How often a step without ``max_visits`` may run in one run: a fix loop that never converges fails."""
TERMINALS = (STOP, FAIL)

Outcome = Literal["success", "failure", "skipped"]
"""How a step ended: it ran and succeeded, it ran and failed (retries spent), or its ``when`` was false."""

_MAX_TIMEOUT = 7 * 86400
_MAX_STALE = 86400
# Below the identifier bound (expeditor.ids): a recipe's name is its jobs' default name and begins
# their default campaign (name, '-', 12 hex), and both must still be valid identifiers.
_MAX_RECIPE_NAME_LENGTH = 64
_RECIPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def validate_recipe_name(name: str) -> str:
    """Return ``name`` if it can name a recipe file (no path separators, dots or traversal)."""
    if len(name) > _MAX_RECIPE_NAME_LENGTH:
        # Not echoed whole: the message must stay one readable line.
        raise RecipeError(
            f"recipe name {name[:24]!r}... is {len(name)} characters long: expected at most {_MAX_RECIPE_NAME_LENGTH}"
        )
    if not _RECIPE_NAME.fullmatch(name):
        raise RecipeError(
            f"recipe name {name!r} is not valid: expected 1 to 64 letters, digits, '_' and '-', "
            "starting with a letter or digit"
        )
    return name


class Orchestrator(StrEnum):
    """Who walks the steps: an agent session calling ``run_skill``, or expeditor's pipeline runner."""

    AGENT = "agent"
    PIPELINE = "pipeline"


def _known_model(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return validate_model(value)
    except InvalidInput as exc:
        raise ValueError(str(exc)) from None


class InputSpec(BaseModel):
    """One input of a recipe, given as ``name: value`` at dispatch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = Field(default="", description="What the input is for, shown in listings and prompts.")
    required: bool | None = Field(
        default=None, description="Whether a value must be given (default: true unless a default is set)."
    )
    default: str | None = Field(default=None, description="The value used when none is given.")

    @field_validator("default", mode="before")
    @classmethod
    def _default_text(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value

    @model_validator(mode="after")
    def _required_or_default(self) -> InputSpec:
        if self.required and self.default is not None:
            raise ValueError("has both 'required: true' and a default; expected one of them")
        return self

    @property
    def is_required(self) -> bool:
        return self.default is None and self.required is not False


class Defaults(BaseModel):
    """Per-recipe fallbacks for the steps' model, stale threshold and timeout."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(default=None, description="sonnet, opus, haiku or a full model id.")
    stale_threshold: float | None = Field(
        default=None, gt=0, le=_MAX_STALE, description="Transcript silence that makes a step stale, seconds."
    )
    timeout: float | None = Field(default=None, gt=0, le=_MAX_TIMEOUT, description="Wall-clock limit, seconds.")

    @field_validator("model")
    @classmethod
    def _model_known(cls, value: str | None) -> str | None:
        return _known_model(value)


class Step(BaseModel):
    """One step: a headless skill session (``skill``) or a command (``run``, an argv, never a shell)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = Field(default="", description="What the step does, for people and the orchestrator.")
    skill: str | None = Field(default=None, min_length=1, description="Skill command, run like run_skill.")
    run: tuple[str, ...] | None = Field(
        default=None, min_length=1, description="Command as an argv list, run through the managed runner."
    )
    model: str | None = Field(default=None, description="sonnet, opus, haiku or a full model id.")
    stale_threshold: float | None = Field(
        default=None,
        gt=0,
        le=_MAX_STALE,
        description="Transcript silence that makes the step stale, seconds.",
    )
    timeout: float | None = Field(default=None, gt=0, le=_MAX_TIMEOUT, description="Wall-clock limit, seconds.")
    retries: int = Field(default=0, ge=0, le=10, description="Extra attempts after a failed one.")
    max_visits: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Times the step may run in one run (default 10); one more fails the run.",
    )
    on_success: str | None = Field(
        default=None,
        description="Step to go to after success, or stop/fail (default: the next step, or stop).",
    )
    on_failure: str = Field(default=FAIL, description="Step to go to after failure, or stop/fail (default: fail).")
    capture: tuple[str, ...] = Field(
        default=(),
        description="Names of values read from the result: its structured output with output_schema "
        "(default: the schema's top-level properties), else its text (key=value lines or a JSON block).",
    )
    output_schema: dict[str, Any] | None = Field(
        default=None,
        description="A JSON Schema of an object: the session answers with a matching object (--json-schema), "
        "captures are its fields, and an answer that does not match fails the step.",
    )
    when: Condition | None = Field(default=None, description="Run the step only when this holds; else skip it.")
    max_budget_usd: float | None = Field(
        default=None, gt=0, description="The session's own budget (Claude Code's --max-budget-usd), USD."
    )

    @field_validator("model")
    @classmethod
    def _model_known(cls, value: str | None) -> str | None:
        return _known_model(value)

    @field_validator("output_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else checked_output_schema(value)

    @model_validator(mode="after")
    def _skill_or_run(self) -> Step:
        if (self.skill is None) == (self.run is None):
            given = "both" if self.skill is not None else "neither"
            raise ValueError(f"has {given} of 'skill' and 'run'; expected exactly one of them")
        if self.run is not None and self.output_schema is not None:
            raise ValueError("has 'output_schema' on a 'run' command, which has no structured output; expected a skill")
        if self.run is not None and self.max_budget_usd is not None:
            # Only a Claude Code session takes --max-budget-usd: on a command it would bound nothing.
            raise ValueError("has 'max_budget_usd' on a 'run' command, which costs nothing; expected a skill")
        return self

    @property
    def capture_names(self) -> tuple[str, ...]:
        """The names the step captures: those listed, else its output schema's top-level properties."""
        if self.capture or self.output_schema is None:
            return self.capture
        return schema_properties(self.output_schema)


@dataclass(frozen=True)
class StepSettings:
    """What a step runs with once its fallbacks are applied; ``model=None`` means the CLI's default."""

    model: str | None
    stale_threshold: float
    timeout: float


class Recipe(BaseModel):
    """A validated recipe. Steps keep their file order, which is the order a run walks them in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="The recipe's name; equals its file name without .yaml.")
    description: str = Field(min_length=1, description="What the recipe does, for listings and prompts.")
    version: int = Field(default=1, ge=1, description="Bumped when the recipe changes meaning.")
    orchestrator: Orchestrator = Field(
        default=Orchestrator.AGENT, description="agent (a session calling run_skill) or pipeline (expeditor)."
    )
    inputs: dict[str, InputSpec] = Field(default_factory=dict, description="Inputs by name.")
    defaults: Defaults = Field(default_factory=Defaults, description="Fallbacks for every step.")
    max_budget_usd: float | None = Field(
        default=None, gt=0, description="The job's budget, USD: past it no further step (or dispatch) starts."
    )
    max_tokens: int | None = Field(
        default=None, gt=0, description="The job's token budget, for providers whose cost is unknown."
    )
    steps: dict[str, Step] = Field(min_length=1, description="The steps, in order.")
    isolation: Isolation = Field(
        default=Isolation.NONE,
        description="worktree: each job runs in a git worktree of its own, on branch expeditor/<campaign>/<job>.",
    )
    keep_worktree: bool = Field(
        default=False, description="Keep a succeeded job's worktree (by default only its branch stays)."
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        try:
            return validate_recipe_name(value)
        except RecipeError as exc:
            raise ValueError(str(exc)) from None

    @property
    def first_step(self) -> str:
        return next(iter(self.steps))

    def next_in_order(self, step: str) -> str:
        """The step after ``step`` in file order, or ``stop`` after the last one."""
        names = list(self.steps)
        index = names.index(step)
        return names[index + 1] if index + 1 < len(names) else STOP

    def route(self, step: str, outcome: Outcome) -> str:
        """Where a run goes after ``step`` ended with ``outcome``: a step name, ``stop`` or ``fail``."""
        spec = self.steps[step]
        if outcome == "failure":
            return spec.on_failure
        if outcome == "success" and spec.on_success is not None:
            return spec.on_success
        return self.next_in_order(step)

    def declared_settings(self, step: str) -> tuple[str | None, float | None, float | None]:
        """The step's model, stale threshold and timeout as the recipe sets them (step, else defaults).

        None where neither sets one: the server's settings decide.
        """
        spec, defaults = self.steps[step], self.defaults
        return (
            spec.model if spec.model is not None else defaults.model,
            spec.stale_threshold if spec.stale_threshold is not None else defaults.stale_threshold,
            spec.timeout if spec.timeout is not None else defaults.timeout,
        )

    def step_settings(self, step: str, settings: Settings) -> StepSettings:
        """The step's model, stale threshold and timeout: the step's own, else defaults, else settings."""
        model, stale_threshold, timeout = self.declared_settings(step)
        return StepSettings(
            model=model if model is not None else settings.default_model,
            stale_threshold=stale_threshold if stale_threshold is not None else settings.stale_threshold,
            timeout=timeout if timeout is not None else settings.timeout,
        )

    def resolve_inputs(self, given: Mapping[str, str]) -> dict[str, str]:
        """Every input's value: the given one, else its default, else ``""`` for an optional input.

        Raises RecipeError listing missing required inputs and unknown names together.
        """
        problems: list[str] = []
        for name in given:
            if name not in self.inputs:
                close = difflib.get_close_matches(name, list(self.inputs), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"unknown input {name!r}{hint}")
        missing = [name for name, spec in self.inputs.items() if spec.is_required and name not in given]
        if missing:
            problems.append(f"missing required input{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        if problems:
            expected = ", ".join(self.inputs) or "none"
            raise RecipeError(f"recipe {self.name!r}: {'; '.join(problems)}; its inputs are: {expected}")
        return {
            name: given.get(name, spec.default if spec.default is not None else "")
            for name, spec in self.inputs.items()
        }
