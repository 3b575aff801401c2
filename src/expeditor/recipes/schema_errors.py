"""Pydantic's validation errors, rewritten as sentences that say what was expected.

An unknown key gets the closest known key suggested; a bound names its unit; a wrong type
names what was given. A container error next to errors inside it (a list emptied by its
bad items) is dropped: the inner errors say more.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from expeditor.recipes.conditions import Condition
from expeditor.recipes.problems import Location, RecipeProblem
from expeditor.recipes.schema import Defaults, InputSpec, Recipe, Step
from expeditor.recipes.yamlsource import YamlDocument

__all__ = ["did_you_mean", "schema_problems"]

_SECONDS_FIELDS = ("stale_threshold", "timeout")


def _fields(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _known_keys(container: Location) -> list[str]:
    if container == ():
        return _fields(Recipe)
    if container == ("defaults",):
        return _fields(Defaults)
    if len(container) == 2 and container[0] == "inputs":
        return _fields(InputSpec)
    if len(container) == 2 and container[0] == "steps":
        return _fields(Step)
    if len(container) >= 3 and container[0] == "steps" and container[2] == "when":
        return _fields(Condition)
    return []


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def schema_problems(exc: ValidationError, doc: YamlDocument) -> list[RecipeProblem]:
    errors = exc.errors()
    locations = [tuple(error["loc"]) for error in errors]
    problems: list[RecipeProblem] = []
    for error, location in zip(errors, locations, strict=True):
        if any(len(other) > len(location) and other[: len(location)] == location for other in locations):
            continue
        problems.append(doc.problem(location, _sentence(error, location)))
    return problems


def _sentence(error: ErrorDetails, location: Location) -> str:
    kind, ctx, got = error["type"], error.get("ctx", {}), _kind(error["input"])
    unit = " of seconds" if location and location[-1] in _SECONDS_FIELDS else ""
    if kind == "extra_forbidden":
        return _unknown_key(str(location[-1]), _known_keys(location[:-1]))
    if kind == "missing":
        return "is required"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {"greater_than": "greater than", "greater_than_equal": "at least"}
        words |= {"less_than": "less than", "less_than_equal": "at most"}
        bound = next(iter(ctx.values()))
        return f"expected a number{unit} {words[kind]} {bound:g}, got {got}"
    if kind == "too_short":
        if location == ("steps",):
            return "expected at least one step"
        return f"expected at least {ctx.get('min_length', 1)} item(s)"
    if location == ("steps",) and kind == "dict_type":
        return f"expected a mapping of step names to steps, in order, got {got}"
    expected = {
        "string_type": "a string",
        "dict_type": "a mapping",
        "model_type": "a mapping",
        "tuple_type": "a list",
        "list_type": "a list",
        "int_type": "a whole number",
        "int_parsing": "a whole number",
        "int_from_float": "a whole number",
        "float_type": f"a number{unit}",
        "float_parsing": f"a number{unit}",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "enum": str(ctx.get("expected", "")),
        "literal_error": str(ctx.get("expected", "")),
    }.get(kind)
    if expected:
        return f"expected {expected}, got {got}"
    return f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {got}"


def _unknown_key(key: str, known: Sequence[str]) -> str:
    message = f"unknown key {key!r}"
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        message += f"; did you mean {close[0]!r}?"
    return f"{message} (expected one of: {', '.join(known)})" if known else message


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
