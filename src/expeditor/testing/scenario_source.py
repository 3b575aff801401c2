"""Where a fake agent's scenario comes from: the environment, a file per command, or the prompt.

In this order: ``EXPEDITOR_FAKE_SCENARIO_<KIND>`` for the session's ``EXPEDITOR_SESSION_KIND``,
``EXPEDITOR_FAKE_SCENARIO`` (a file path, or inline JSON/YAML), ``EXPEDITOR_FAKE_SCENARIO_DIR/<command>.yaml``
for a prompt ``/<command> ...``, then the first JSON object with a ``steps`` key in the prompt.
Standard library only at import: the fake agent's start-up stays short.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from expeditor.errors import ScenarioError

if TYPE_CHECKING:
    from expeditor.testing.scenario import Scenario

__all__ = ["scenario_for"]


def _scenario_in_prompt(prompt: str) -> str | None:
    """The first JSON object in the prompt that has a ``steps`` key, as text; other JSON is left alone.

    Prompts such as ``/make-plan 42 {"steps": [...]}`` carry their scenario inline; an orchestrator
    prompt that merely lists JSON inputs is not mistaken for one.
    """
    decoder = json.JSONDecoder()
    start = prompt.find("{")
    while start != -1:
        try:
            value, end = decoder.raw_decode(prompt, start)
        except ValueError:
            start = prompt.find("{", start + 1)
            continue
        if isinstance(value, dict) and "steps" in value:
            return prompt[start:end]
        start = prompt.find("{", end)
    return None


def _scenario_file_for(prompt: str) -> Path | None:
    """``EXPEDITOR_FAKE_SCENARIO_DIR/<command>.yaml`` (or ``.json``) for a prompt starting ``/<command>``.

    Lets a whole recipe run on the fake agent with one scenario per skill, and the recipe stay
    as a person would write it. A plugin's ``/plugin:skill`` looks for ``plugin__skill``.
    """
    directory = os.environ.get("EXPEDITOR_FAKE_SCENARIO_DIR")
    words = prompt.split(maxsplit=1)
    if not directory or not words or not words[0].startswith("/"):
        return None
    name = words[0][1:].replace(":", "__")
    for suffix in (".yaml", ".json"):
        candidate = Path(directory) / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def scenario_for(prompt: str) -> Scenario | None:
    """The scenario given in the environment or the prompt; None for the default reply.

    pydantic is imported only here, when there is a scenario to validate: a default run skips it.
    """
    # A per-kind scenario lets one test drive several levels (a dispatched orchestrator and the
    # skill sessions it starts) that all inherit the same environment.
    kind = os.environ.get("EXPEDITOR_SESSION_KIND", "").upper()
    variable = f"EXPEDITOR_FAKE_SCENARIO_{kind}" if os.environ.get(f"EXPEDITOR_FAKE_SCENARIO_{kind}") else None
    variable = variable or "EXPEDITOR_FAKE_SCENARIO"
    source = os.environ.get(variable)
    by_command = _scenario_file_for(prompt)
    if source:
        looks_inline = "\n" in source or ": " in source or source.lstrip().startswith("{")
        if not looks_inline and not Path(source).is_file():
            raise ScenarioError(f"{variable} names no file and is no scenario: {source}")
        text, origin = (source, variable) if looks_inline else (Path(source).read_text(), f"file {source}")
    elif by_command is not None:
        text, origin = by_command.read_text(), f"file {by_command}"
    else:
        text, origin = _scenario_in_prompt(prompt), "the prompt"
    if text is None:
        return None
    from expeditor.testing.scenario import parse_scenario

    return parse_scenario(text, origin=origin)
