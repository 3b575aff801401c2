"""Structured output: a JSON Schema a session's final answer must match, and the check of an answer.

Claude Code 2.1.332 takes the schema as ``--json-schema`` and gives the model a ``StructuredOutput``
tool whose input is the schema: a tool input is always a JSON object, so the schema must describe
one. The CLI checks each call itself and answers a mismatch with an error tool result, letting the
model try again; the answer comes back as the ``result`` event's ``structured_output`` (and its
``result`` text is the same object as compact JSON). docs/claude-code-cli-notes.md has the details.
We check the answer again on our side: the fake agent, another provider or an older CLI may not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from jsonschema.validators import validator_for

__all__ = ["checked_output_schema", "output_mismatch", "schema_properties"]

_MAX_SCHEMA_BYTES = 64 * 1024
"""Well under one argv string's limit (128 KiB), leaving room for the prompt beside it."""
_MAX_MESSAGE = 300


def checked_output_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` as a plain dict if it is a JSON Schema of an object; else ValueError saying what is wrong."""
    try:
        text = json.dumps(schema, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"is not plain JSON ({exc}): expected a JSON Schema written with JSON values only") from None
    if len(text.encode()) > _MAX_SCHEMA_BYTES:
        raise ValueError(f"is {len(text.encode())} bytes as JSON: expected at most {_MAX_SCHEMA_BYTES}")
    plain: dict[str, Any] = json.loads(text)
    try:
        validator_for(plain, default=Draft202012Validator).check_schema(plain)
    except SchemaError as exc:
        where = _pointer(exc.path)
        raise ValueError(f"is not a valid JSON Schema: {exc.message}{where}") from None
    if plain.get("type") != "object":
        raise ValueError(
            'must describe a JSON object ("type: object" at its top): Claude Code returns structured '
            "output as a tool's input, which is always an object"
        )
    return plain


def schema_properties(schema: Mapping[str, Any]) -> tuple[str, ...]:
    """The names of the top-level properties ``schema`` declares, in order."""
    properties = schema.get("properties")
    return tuple(str(name) for name in properties) if isinstance(properties, Mapping) else ()


def output_mismatch(output: Any, schema: Mapping[str, Any]) -> str | None:
    """None if ``output`` matches ``schema``; else what is wrong with it, in one line."""
    validator = validator_for(schema, default=Draft202012Validator)(schema)
    errors = list(validator.iter_errors(output))
    if not errors:
        return None
    first: ValidationError = best_match(errors)
    # The message quotes the offending value (of any size) before saying what was expected: cut
    # from the middle, so the reason stays one readable line and keeps its point.
    message = first.message
    if len(message) > _MAX_MESSAGE:
        message = f"{message[: _MAX_MESSAGE // 2]}...{message[-_MAX_MESSAGE // 2 :]}"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{' '.join(message.split())}{_pointer(first.absolute_path) or ' at the top'}{more}"


def _pointer(path: Any) -> str:
    parts = [str(part) for part in path]
    return f" at /{'/'.join(parts)}" if parts else ""
