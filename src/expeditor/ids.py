"""Identifiers that become parts of file names and records: session ids, marker labels, campaign,
job and step names.

They are validated once, here, because they end up in paths and in marker file names
that are parsed back (``{label}-in-progress-{session_id}-{32 hex}.marker``), and their length
is bounded here, once, so no name fills a file name, a record or a status table.
"""

from __future__ import annotations

import re
import uuid

from expeditor.errors import InvalidIdentifier

__all__ = ["MAX_IDENTIFIER_LENGTH", "RESERVED_INFIX", "new_session_id", "validate_identifier"]

RESERVED_INFIX = "in-progress"
# Long enough for any name a person or an agent means (a UUID is 36), short enough that a marker
# file name (a label, a session id and 53 more characters) stays under the 255 bytes a name may have.
MAX_IDENTIFIER_LENGTH = 100
_IDENTIFIER = re.compile(r"[A-Za-z0-9_-]+")


def validate_identifier(value: str, *, what: str = "session id") -> str:
    """Return ``value`` if it is safe as part of a file name, else raise InvalidIdentifier."""
    if len(value) > MAX_IDENTIFIER_LENGTH:
        # Not echoed whole: the message must stay one readable line.
        raise InvalidIdentifier(
            f"{what} {value[:24]!r}... is {len(value)} characters long: expected at most {MAX_IDENTIFIER_LENGTH}"
        )
    if not _IDENTIFIER.fullmatch(value):
        raise InvalidIdentifier(f"{what} {value!r} is not valid: expected 1 or more of A-Z, a-z, 0-9, '_' and '-'")
    if RESERVED_INFIX in value:
        raise InvalidIdentifier(f"{what} {value!r} is not valid: it may not contain {RESERVED_INFIX!r}")
    return value


def new_session_id() -> str:
    """A fresh session id in the form Claude Code accepts for ``--session-id`` (a UUID4)."""
    return str(uuid.uuid4())
