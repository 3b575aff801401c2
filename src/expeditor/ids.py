"""Identifiers that become parts of file names: session ids and marker labels.

They are validated once, here, because they end up in paths and in marker file names
that are parsed back (``{label}-in-progress-{session_id}-{32 hex}.marker``).
"""

from __future__ import annotations

import re
import uuid

from expeditor.errors import InvalidIdentifier

__all__ = ["RESERVED_INFIX", "new_session_id", "validate_identifier"]

RESERVED_INFIX = "in-progress"
_IDENTIFIER = re.compile(r"[A-Za-z0-9_-]+")


def validate_identifier(value: str, *, what: str = "session id") -> str:
    """Return ``value`` if it is safe as part of a file name, else raise InvalidIdentifier."""
    if not _IDENTIFIER.fullmatch(value):
        raise InvalidIdentifier(f"{what} {value!r} is not valid: expected 1 or more of A-Z, a-z, 0-9, '_' and '-'")
    if RESERVED_INFIX in value:
        raise InvalidIdentifier(f"{what} {value!r} is not valid: it may not contain {RESERVED_INFIX!r}")
    return value


def new_session_id() -> str:
    """A fresh session id in the form Claude Code accepts for ``--session-id`` (a UUID4)."""
    return str(uuid.uuid4())
