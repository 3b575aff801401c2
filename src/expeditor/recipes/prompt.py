"""The prompt of a dispatched orchestrator: an agent session that walks a recipe with ``run_skill``.

It gives the recipe's description, how to call the tool, the routing rules, every step in
order with its skill command, settings, result schema and routes, and every input verbatim as
``name: value`` lines. It is pinned by a golden test: change it on purpose only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from expeditor.recipes.problems import RecipeError
from expeditor.recipes.schema import Orchestrator, Recipe, Step

__all__ = ["RUN_SKILL_TOOL", "orchestrator_prompt"]

RUN_SKILL_TOOL = "mcp__expeditor__run_skill"
_SERVER_DEFAULT = "server default"

_RULES = f"""\
Your job is to run the recipe's steps, each as its own headless session, by calling
the MCP tool {RUN_SKILL_TOOL}, and to choose the next step by the routes
below. Do not do a step's work yourself, and do not skip, reorder or add steps. Make
one call at a time and wait for its result.

How to call {RUN_SKILL_TOOL} for a step:
- skill_command: the step's skill command, with each {{name}} replaced by the value of that
  name: an input (listed verbatim at the end) or the latest value captured under that name.
- cwd: {{cwd}}
- model: the step's model; leave the argument out where the step says "{_SERVER_DEFAULT}".
- stale_threshold: the step's stale threshold in seconds; leave it out where it says
  "{_SERVER_DEFAULT}".
- timeout: the step's timeout in seconds; leave it out where it says "{_SERVER_DEFAULT}".
- output_schema: the step's result schema, exactly as the step gives it (a JSON object);
  leave it out for a step without one.
- max_budget_usd: the step's budget in USD; leave it out for a step without one.

Reading a result:
- The step succeeded when the tool reports success. An error result, or a session that
  ended stale, timed out or crashed, is a failure.
- When a step lists captures, take each from its result text: a line "name=value", or the
  key of a JSON object. A later value of a name replaces an earlier one.
- A step with a result schema answers with a JSON object matching it: the tool result's
  structured_output. Take its captures from that object's fields. A result without it, or
  with one that does not match the schema, is a failure.

Routes:
- A step with "retries: N" is called again, up to N more times, while it fails; only then
  does it take its failure route.
- After a step, go to its "on success" route if it succeeded, else to its "on failure" route.
  "stop" ends the recipe as a success; "fail" ends it as a failure.
- A step with "when" runs only if its condition holds for the inputs and the latest captures;
  otherwise skip it and go to the next step in order ("stop" after the last step). A capture
  no step has reported yet has no value, so a comparison with it is false.
- A step with "at most N runs": if a route would start it an (N+1)th time, end the recipe as
  a failure instead."""

_REPORT = """\
When the recipe ends, reply with the steps you ran, in order, each with its outcome; the
latest captured values as name=value lines; and, as the last line, recipe_outcome=success or
recipe_outcome=failure."""


def orchestrator_prompt(recipe: Recipe, inputs: Mapping[str, str], *, cwd: str | None = None) -> str:
    """The orchestrator's prompt for ``recipe`` with ``inputs`` (defaults applied, unknown names refused).

    ``cwd`` is the directory every step runs in; without it the orchestrator uses its own.
    """
    if recipe.orchestrator is not Orchestrator.AGENT:
        raise RecipeError(f"recipe {recipe.name!r} runs on the pipeline runner; it has no orchestrator prompt")
    values = recipe.resolve_inputs(inputs)
    where = cwd if cwd is not None else "your current working directory, as an absolute path"
    parts = [
        f"You are the orchestrator of the expeditor recipe {recipe.name!r} (version {recipe.version}).",
        f"About the recipe:\n{recipe.description.strip()}",
        _RULES.replace("{cwd}", where),
        "Steps, in order:",
        *(_step_block(recipe, index, name, step) for index, (name, step) in enumerate(recipe.steps.items(), 1)),
        _REPORT,
        _inputs_block(values),
    ]
    return "\n\n".join(parts) + "\n"


def _step_block(recipe: Recipe, index: int, name: str, step: Step) -> str:
    if step.skill is None:
        raise RecipeError(f"recipe {recipe.name!r}: step {name!r} has no skill; run_skill cannot run it")
    title = f"{index}. {name}" + (f": {' '.join(step.description.split())}" if step.description else "")
    model, stale, timeout = recipe.declared_settings(name)
    lines = [
        title,
        f"   skill_command: {step.skill}",
        f"   model: {model or _SERVER_DEFAULT}; stale_threshold: {_seconds(stale)}; timeout: {_seconds(timeout)}",
    ]
    if step.when is not None:
        lines.append(f"   when: {step.when.describe()}")
    if step.max_budget_usd is not None:
        lines.append(f"   budget: {step.max_budget_usd:g} USD")
    if step.output_schema is not None:
        lines.append(f"   result schema: {json.dumps(step.output_schema, separators=(',', ':'))}")
    if step.capture_names:
        lines.append(f"   captures: {', '.join(step.capture_names)}")
    if step.retries:
        lines.append(f"   retries: {step.retries}")
    if step.max_visits is not None:
        lines.append(f"   at most {step.max_visits} runs")
    lines.append(f"   on success: {recipe.route(name, 'success')}; on failure: {recipe.route(name, 'failure')}")
    return "\n".join(lines)


def _inputs_block(values: Mapping[str, str]) -> str:
    if not values:
        return "Inputs: none."
    header = 'Inputs (verbatim, one "name: value" each'
    if any("\n" in value for value in values.values()):
        header += '; a value may span lines, up to the next input\'s "name: " line'
    return "\n".join([header + "):", *(f"{name}: {value}" for name, value in values.items())])


def _seconds(value: float | None) -> str:
    return _SERVER_DEFAULT if value is None else f"{value:g}"
