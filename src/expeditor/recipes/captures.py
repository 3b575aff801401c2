"""Captures: named values a step reports in its result, for later steps and conditions.

A step reports a value either as a ``name=value`` line (a list bullet, surrounding
backticks and bold markers are tolerated) or as a key of a JSON object, in a fenced code
block or as the whole result text. Only the names the step declares are taken; when a
name is reported more than once, the last report in the text wins. Non-string JSON values
are kept as compact JSON (``true``, ``3``, ``["a","b"]``).

A step with ``output_schema`` reports through structured output instead (``judge_attempt``):
its captures are the answer's fields, and an answer that is missing or does not match the
schema fails the attempt, so the step's retries and failure route apply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from expeditor.executor import RunResult
from expeditor.executor.structured_output import output_mismatch
from expeditor.recipes.placeholders import NAME_PATTERN
from expeditor.recipes.schema import Step
from expeditor.usage.stream_json import encodable

__all__ = ["AttemptVerdict", "extract_captures", "fields_of", "judge_attempt"]

_LINE = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+)?[`*]*(" + NAME_PATTERN + r")[`*]*[ \t]*=[ \t]*(.*?)[`*]*[ \t]*$", re.MULTILINE
)
_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_-]*)[ \t]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)


def extract_captures(result_text: str, names: Collection[str]) -> dict[str, str]:
    """The values of ``names`` reported in ``result_text``; names not reported are absent."""
    wanted = set(names)
    if not wanted:
        return {}
    found: list[tuple[int, str, str]] = []
    for match in _LINE.finditer(result_text):
        if match.group(1) in wanted:
            found.append((match.start(), match.group(1), match.group(2).strip()))
    for match in _FENCE.finditer(result_text):
        if match.group(1) not in ("", "json"):
            continue
        found.extend((match.start(), key, value) for key, value in _json_values(match.group(2), wanted))
    found.extend((len(result_text), key, value) for key, value in _json_values(result_text, wanted))
    return {name: value for _, name, value in sorted(found, key=lambda item: item[0])}


def _json_values(text: str, wanted: set[str]) -> list[tuple[str, str]]:
    stripped = text.strip()
    if not stripped.startswith("{"):
        return []
    try:
        parsed: Any = json.loads(stripped)
    except ValueError:
        return []
    if not isinstance(parsed, dict):
        return []
    values: list[tuple[str, str]] = []
    for key, value in parsed.items():
        if key in wanted:
            values.append((key, _as_text(value)))
    return values


def fields_of(answer: Mapping[str, Any], names: Collection[str]) -> dict[str, str]:
    """The values of ``names`` among the fields of a structured answer; names it lacks are absent."""
    return {name: _as_text(answer[name]) for name in names if name in answer}


def _as_text(value: Any) -> str:
    # The result text is encodable, but a JSON escape inside it can make a lone surrogate again.
    return encodable(value) if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class AttemptVerdict:
    """Whether one attempt of a step succeeded, why, and what it captured."""

    success: bool
    reason: str
    captures: dict[str, str]


def judge_attempt(result: RunResult, step: Step) -> AttemptVerdict:
    """The attempt's verdict: the session's own, then (with ``output_schema``) its structured answer's."""
    if not result.success:
        return AttemptVerdict(False, result.reason, {})
    if step.output_schema is None:
        return AttemptVerdict(True, result.reason, extract_captures(result.result_text, step.capture_names))
    answer = result.structured_output if result.structured_output is not None else _json_object(result.result_text)
    if answer is None:
        return AttemptVerdict(
            False,
            "the session ended without structured output (it never answered through Claude Code's StructuredOutput "
            "tool): expected an object matching the step's output_schema",
            {},
        )
    mismatch = output_mismatch(answer, step.output_schema)
    if mismatch is not None:
        return AttemptVerdict(False, f"the structured output does not match the step's output_schema: {mismatch}", {})
    return AttemptVerdict(True, result.reason, fields_of(answer, step.capture_names))


def _json_object(text: str) -> dict[str, Any] | None:
    """The result text as a JSON object, if it is exactly one (an answer made without the tool)."""
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
