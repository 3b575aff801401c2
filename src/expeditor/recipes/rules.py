"""The rules that span steps: names, routes, placeholders, ``when`` references and the step graph.

They run over a valid recipe or, when some steps are malformed, over the well-formed parts
(a malformed step minus its bad fields), so one pass reports every problem; the graph rules
(unreachable steps, loops with no way out) wait until every step is well formed.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from expeditor.errors import InvalidIdentifier
from expeditor.executor.structured_output import schema_properties
from expeditor.ids import validate_identifier
from expeditor.recipes.graph import closed_loops, reachable_from, unreachable_steps
from expeditor.recipes.placeholders import NAME_PATTERN, placeholder_names
from expeditor.recipes.problems import Location, RecipeProblem
from expeditor.recipes.schema import TERMINALS, Orchestrator, Recipe, Step
from expeditor.recipes.schema_errors import did_you_mean
from expeditor.recipes.yamlsource import YamlDocument

__all__ = ["cross_step_problems"]

_NAME = re.compile(NAME_PATTERN)


def cross_step_problems(
    doc: YamlDocument, recipe: Recipe | None, data: dict[Any, Any], expected_name: str | None
) -> list[RecipeProblem]:
    """Problems no single field shows; ``recipe`` is None when the schema refused ``data``."""
    outline = _Outline.of(recipe) if recipe is not None else _Outline.partial(data)
    return _Rules(doc, outline).run(expected_name)


@dataclass
class _Outline:
    """What the cross-step rules need, from a valid recipe or from the well-formed parts of one."""

    name: object
    orchestrator: object
    input_names: list[str]
    step_names: list[str]
    steps: dict[str, Step]
    recipe: Recipe | None = None
    captured_by: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for step_name, step in self.steps.items():
            for capture in step.capture_names:
                self.captured_by.setdefault(capture, []).append(step_name)

    @classmethod
    def of(cls, recipe: Recipe) -> _Outline:
        return cls(recipe.name, recipe.orchestrator, list(recipe.inputs), list(recipe.steps), recipe.steps, recipe)

    @classmethod
    def partial(cls, data: dict[Any, Any]) -> _Outline:
        inputs = data.get("inputs")
        raw_steps = data.get("steps")
        steps: dict[str, Step] = {}
        step_names: list[str] = []
        if isinstance(raw_steps, dict):
            for key, value in raw_steps.items():
                step_names.append(str(key))
                step = _lenient_step(value)
                if step is not None:
                    steps[str(key)] = step
        input_names = [str(key) for key in inputs] if isinstance(inputs, dict) else []
        return cls(data.get("name"), data.get("orchestrator", Orchestrator.AGENT), input_names, step_names, steps)


def _lenient_step(raw: object) -> Step | None:
    """The step without its malformed fields, so the cross-step rules can still check the rest."""
    try:
        return Step.model_validate(raw)
    except ValidationError as exc:
        if not isinstance(raw, dict):
            return None
        bad = {error["loc"][0] for error in exc.errors() if error["loc"]}
        trimmed = {key: value for key, value in raw.items() if key not in bad}
        try:
            return Step.model_validate(trimmed) if bad else None
        except ValidationError:
            return None


class _Rules:
    def __init__(self, doc: YamlDocument, outline: _Outline) -> None:
        self.doc = doc
        self.outline = outline
        self.problems: list[RecipeProblem] = []

    def add(self, location: Location, message: str) -> None:
        self.problems.append(self.doc.problem(location, message))

    def run(self, expected_name: str | None) -> list[RecipeProblem]:
        self.check_names(expected_name)
        for step_name, step in self.outline.steps.items():
            self.check_routes(step_name, step)
            self.check_captures(step_name, step)
            self.check_placeholders(step_name, step)
            self.check_when(step_name, step)
        if self.outline.recipe is not None:
            self.check_graph(self.outline.recipe)
        return self.problems

    def check_names(self, expected_name: str | None) -> None:
        name = self.outline.name
        if isinstance(name, str) and expected_name is not None and name != expected_name:
            self.add(
                ("name",),
                f"is {name!r} but the file is {expected_name}.yaml; expected the name of the file, "
                "which is how the recipe is found",
            )
        for input_name in self.outline.input_names:
            if not _is_placeholder_name(input_name):
                self.add(("inputs", input_name), _bad_name_message("input"))
        for step_name in self.outline.step_names:
            if step_name in TERMINALS:
                self.add(("steps", step_name), "is a reserved name ('stop' and 'fail' end a run); expected another")
                continue
            try:
                validate_identifier(step_name, what="step name")
            except InvalidIdentifier as exc:
                self.add(("steps", step_name), str(exc))

    def check_routes(self, step_name: str, step: Step) -> None:
        names = self.outline.step_names
        for route_field, target in (("on_success", step.on_success), ("on_failure", step.on_failure)):
            if target is None or target in names or target in TERMINALS:
                continue
            listing = ", ".join(names)
            self.add(
                ("steps", step_name, route_field),
                f"routes to {target!r}, which is not a step; expected one of {listing}, 'stop' or 'fail'"
                f"{did_you_mean(target, [*names, *TERMINALS])}",
            )
        if step.run is not None and self.outline.orchestrator == Orchestrator.AGENT:
            self.add(
                ("steps", step_name, "run"),
                "is a command, but an agent orchestrator runs steps only through run_skill; "
                "expected 'skill', or 'orchestrator: pipeline' for the recipe",
            )

    def check_captures(self, step_name: str, step: Step) -> None:
        seen: set[str] = set()
        for index, capture in enumerate(step.capture):
            location = ("steps", step_name, "capture", index)
            if not _is_placeholder_name(capture):
                self.add(location, _bad_name_message("capture"))
            elif capture in self.outline.input_names:
                self.add(location, f"{capture!r} is also an input's name; expected a name no input has")
            elif capture in seen:
                self.add(location, f"{capture!r} is listed twice; expected each name once")
            elif step.output_schema is not None and capture not in (fields := schema_properties(step.output_schema)):
                listing = ", ".join(fields) or "none are declared"
                self.add(
                    location,
                    f"{capture!r} is not a property of the step's output_schema, where captures come from; "
                    f"expected one of: {listing}{did_you_mean(capture, fields)}",
                )
            seen.add(capture)
        if step.output_schema is not None and not step.capture:
            # Without a list, every top-level property is captured: each must be able to be one.
            for capture in step.capture_names:
                if not _is_placeholder_name(capture):
                    why = "is not a valid capture name (letters, digits and '_', not starting with a digit)"
                elif capture in self.outline.input_names:
                    why = "is also an input's name"
                else:
                    continue
                self.add(
                    ("steps", step_name, "output_schema"),
                    f"has property {capture!r}, which {why}; expected 'capture' listing the properties to keep",
                )

    def check_placeholders(self, step_name: str, step: Step) -> None:
        templates: list[tuple[Location, str]] = []
        if step.skill is not None:
            templates.append((("steps", step_name, "skill"), step.skill))
        for index, argument in enumerate(step.run or ()):
            templates.append((("steps", step_name, "run", index), argument))
        for location, template in templates:
            for name in placeholder_names(template):
                message = self._placeholder_problem(step_name, name)
                if message:
                    self.add(location, message)

    def _placeholder_problem(self, step_name: str, name: str) -> str | None:
        outline = self.outline
        if name in outline.input_names:
            return None
        capturers = outline.captured_by.get(name)
        if capturers is None:
            known = list(dict.fromkeys([*outline.input_names, *outline.captured_by]))
            listing = ", ".join(f"{{{known_name}}}" for known_name in known) if known else "none are declared"
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {{{close[0]}}}?" if close else ""
            return f"placeholder {{{name}}} names no input and no capture; expected one of: {listing}{hint}"
        recipe = outline.recipe
        if recipe is None or any(step_name in reachable_from(recipe, capturer) for capturer in capturers):
            return None
        steps = ", ".join(repr(capturer) for capturer in capturers)
        which = f"step {steps}, which never runs" if len(capturers) == 1 else f"steps {steps}, none of which runs"
        return (
            f"placeholder {{{name}}} is captured only by {which} before this step; "
            "expected an input or a capture of an earlier step"
        )

    def check_when(self, step_name: str, step: Step) -> None:
        if step.when is None:
            return
        outline = self.outline
        for kind, name in step.when.references():
            known = outline.input_names if kind == "input" else list(outline.captured_by)
            if name in known:
                continue
            source = "no input of that name is declared" if kind == "input" else "no step captures it"
            listing = ", ".join(known) if known else "none"
            hint = did_you_mean(name, known)
            self.add(
                ("steps", step_name, "when"),
                f"reads {kind} {name!r}, but {source}; expected one of: {listing}{hint}",
            )

    def check_graph(self, recipe: Recipe) -> None:
        first = recipe.first_step
        for name in unreachable_steps(recipe):
            self.add(
                ("steps", name),
                f"is never reached from the first step {first!r}; expected a route to it "
                "(another step's on_success or on_failure), or remove it",
            )
        for members in closed_loops(recipe):
            names = ", ".join(repr(member) for member in members)
            what = f"steps {names} route to one another" if len(members) > 1 else "routes back to itself"
            self.add(
                ("steps", members[0]),
                f"{what} with no way out but 'fail', so the recipe can never succeed; expected an "
                "on_success or on_failure route out of the loop (to a later step or 'stop'), or a 'when'",
            )


def _is_placeholder_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def _bad_name_message(what: str) -> str:
    return (
        f"is not a valid {what} name; expected letters, digits and '_', not starting with a digit, "
        "so it can be used as a {placeholder}"
    )
