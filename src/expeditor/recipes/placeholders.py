"""``{name}`` placeholders in skill commands and ``run`` argv, filled in without a shell.

``{name}`` (a name of letters, digits and ``_``, not starting with a digit) is replaced by
the input or capture of that name; ``{{`` is a literal ``{``; every other character,
including a ``{`` that does not start a placeholder (as in JSON), is kept as written.
A name without a value is an error, never an empty string. An argv is substituted item by
item, so a value with spaces or shell metacharacters stays one literal argument.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterator, Mapping, Sequence

from expeditor.recipes.problems import RecipeError

__all__ = ["NAME_PATTERN", "placeholder_names", "substitute", "substitute_argv"]

NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"
_TOKEN = re.compile(r"\{\{|\{(" + NAME_PATTERN + r")\}")


def _names(template: str) -> Iterator[str]:
    for match in _TOKEN.finditer(template):
        if match.group(1) is not None:
            yield match.group(1)


def placeholder_names(template: str) -> list[str]:
    """The distinct placeholder names in ``template``, in order of first use."""
    return list(dict.fromkeys(_names(template)))


def substitute(template: str, values: Mapping[str, str], *, keep: Collection[str] = (), where: str = "") -> str:
    """Fill every ``{name}`` from ``values``; names in ``keep`` stay as placeholders.

    With ``keep`` the result is still a template (``{{`` stays ``{{``), to be filled later.
    Raises RecipeError naming the first placeholder that has no value.
    """
    partial = bool(keep)

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "{{" if partial else "{"
        if name in keep:
            return match.group(0)
        try:
            return values[name]
        except KeyError:
            raise RecipeError(_missing_message(name, template, values, where)) from None

    return _TOKEN.sub(replace, template)


def substitute_argv(argv: Sequence[str], values: Mapping[str, str], *, where: str = "") -> list[str]:
    """Substitute each argument on its own: the result is an argv, never a shell string."""
    return [substitute(argument, values, where=where) for argument in argv]


def _missing_message(name: str, template: str, values: Mapping[str, str], where: str) -> str:
    place = f" in {where}" if where else ""
    known = sorted(values)
    message = f"placeholder {{{name}}}{place} ({template!r}) has no value"
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        message += f"; did you mean {{{close[0]}}}?"
    listing = ", ".join(known) if known else "none"
    return f"{message}; names with a value: {listing}"
