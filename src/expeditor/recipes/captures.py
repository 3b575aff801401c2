"""Captures: named values a step reports in its result text, for later steps and conditions.

A step reports a value either as a ``name=value`` line (a list bullet, surrounding
backticks and bold markers are tolerated) or as a key of a JSON object, in a fenced code
block or as the whole result text. Only the names the step declares are taken; when a
name is reported more than once, the last report in the text wins. Non-string JSON values
are kept as compact JSON (``true``, ``3``, ``["a","b"]``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

from expeditor.recipes.placeholders import NAME_PATTERN
from expeditor.usage.stream_json import encodable

__all__ = ["extract_captures"]

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
            # The result text is encodable, but a JSON escape inside it can make a lone surrogate again.
            text_value = encodable(value) if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            values.append((key, text_value))
    return values
