"""``when``: a small declarative condition on a recipe's inputs and captures. No code is evaluated.

Forms (each a mapping with exactly one shape)::

    {input: mode, equals: full}                 an input's value equals a string
    {capture: verdict, in: [approve, minor]}    a capture's value is one of several strings
    {not: CONDITION}
    {all: [CONDITION, ...]}                     every condition holds
    {any: [CONDITION, ...]}                     at least one holds

Values are compared as strings. A capture no step has produced yet has no value, so
``equals`` and ``in`` are false for it (and ``not`` of them is true).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["Condition", "Reference"]

Reference = tuple[Literal["input", "capture"], str]
"""A name a condition reads: ``("input", "mode")`` or ``("capture", "verdict")``."""

_SHAPES = "{input|capture: NAME, equals: VALUE}, {input|capture: NAME, in: [VALUES]}, {not: …}, {all: […]}, {any: […]}"


def _as_text(value: object) -> str:
    if isinstance(value, bool) or value is None:
        raise ValueError(
            f"expected a string, got {value!r}; YAML reads yes/no/true/false/null as non-strings, so quote it"
        )
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"expected a string, got {type(value).__name__}")


class Condition(BaseModel):
    """One ``when`` condition: a comparison, or ``not``/``all``/``any`` of conditions."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    input: str | None = Field(default=None, description="Name of the input to compare.")
    capture: str | None = Field(default=None, description="Name of the capture to compare.")
    equals: str | None = Field(default=None, description="The value must equal this string.")
    in_: tuple[str, ...] | None = Field(
        default=None, alias="in", min_length=1, description="The value must be one of these strings."
    )
    not_: Condition | None = Field(default=None, alias="not", description="Holds when this condition does not.")
    all_: tuple[Condition, ...] | None = Field(
        default=None, alias="all", min_length=1, description="Holds when every one of these holds."
    )
    any_: tuple[Condition, ...] | None = Field(
        default=None, alias="any", min_length=1, description="Holds when at least one of these holds."
    )

    @field_validator("equals", mode="before")
    @classmethod
    def _equals_text(cls, value: object) -> object:
        return value if value is None else _as_text(value)

    @field_validator("in_", mode="before")
    @classmethod
    def _in_texts(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(_as_text(item) for item in value)
        return value

    @model_validator(mode="after")
    def _one_shape(self) -> Condition:
        combinators = [key for key, value in (("not", self.not_), ("all", self.all_), ("any", self.any_)) if value]
        sources = [key for key, value in (("input", self.input), ("capture", self.capture)) if value is not None]
        tests = [key for key, value in (("equals", self.equals), ("in", self.in_)) if value is not None]
        if combinators:
            if len(combinators) > 1 or sources or tests:
                raise ValueError(f"mixes {', '.join(combinators + sources + tests)}; expected one of {_SHAPES}")
        elif not sources:
            raise ValueError(f"expected one of {_SHAPES}")
        elif len(sources) > 1:
            raise ValueError("names both an input and a capture; expected one of them")
        elif not tests:
            raise ValueError(f"has no test for {sources[0]} {self.input or self.capture!r}; expected 'equals' or 'in'")
        elif len(tests) > 1:
            raise ValueError("has both 'equals' and 'in'; expected one of them")
        return self

    def holds(self, inputs: Mapping[str, str], captures: Mapping[str, str]) -> bool:
        """Whether the condition is true for these input and capture values."""
        if self.not_ is not None:
            return not self.not_.holds(inputs, captures)
        if self.all_ is not None:
            return all(part.holds(inputs, captures) for part in self.all_)
        if self.any_ is not None:
            return any(part.holds(inputs, captures) for part in self.any_)
        if self.input is not None:
            value = inputs.get(self.input)
        else:
            value = None if self.capture is None else captures.get(self.capture)
        if value is None:
            return False
        if self.equals is not None:
            return value == self.equals
        return value in (self.in_ or ())

    def references(self) -> Iterator[Reference]:
        """Every input and capture name the condition reads."""
        if self.input is not None:
            yield ("input", self.input)
        if self.capture is not None:
            yield ("capture", self.capture)
        for part in (self.not_, *(self.all_ or ()), *(self.any_ or ())):
            if part is not None:
                yield from part.references()

    def describe(self) -> str:
        """The condition in words, e.g. ``capture verdict is 'approve' and input mode is not 'quick'``."""
        if self.not_ is not None:
            return f"not ({self.not_.describe()})"
        if self.all_ is not None:
            return " and ".join(_grouped(part) for part in self.all_)
        if self.any_ is not None:
            return " or ".join(_grouped(part) for part in self.any_)
        subject = f"input {self.input}" if self.input is not None else f"capture {self.capture}"
        if self.equals is not None:
            return f"{subject} is {self.equals!r}"
        return f"{subject} is one of [{', '.join(repr(value) for value in self.in_ or ())}]"


def _grouped(part: Condition) -> str:
    text = part.describe()
    return f"({text})" if part.all_ is not None or part.any_ is not None else text
