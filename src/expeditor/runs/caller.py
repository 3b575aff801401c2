"""Who is calling: the session id a tool call's marker is keyed on, and what that session may do.

Over stdio the server is a child of the calling Claude Code session, which sets
``CLAUDE_CODE_SESSION_ID`` for it; ``EXPEDITOR_SESSION_ID`` overrides it for callers that are
not Claude Code. Over HTTP, a session expeditor launched sends ``X-Expeditor-Caller-Session``
(written into the ``--mcp-config`` it generated); ``_meta`` carries no session id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from expeditor.errors import InvalidIdentifier, InvalidInput
from expeditor.executor.models import SessionKind
from expeditor.ids import validate_identifier

__all__ = ["CALLER_HEADER", "CallerContext"]

CALLER_HEADER = "x-expeditor-caller-session"

# Which tools each kind of managed session may call (DESIGN: the recursion rule).
_MAY_CALL: dict[SessionKind | None, frozenset[str]] = {
    None: frozenset({"run_skill", "dispatch"}),
    SessionKind.ORCHESTRATOR: frozenset({"run_skill"}),
    SessionKind.SKILL: frozenset(),
    SessionKind.PIPELINE: frozenset(),
    SessionKind.COMMAND: frozenset(),
}


@dataclass(frozen=True)
class CallerContext:
    """The calling session's id (None when unknown: then no marker is written) and its kind."""

    session_id: str | None
    kind: SessionKind | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CallerContext:
        session_id = env.get("EXPEDITOR_SESSION_ID") or env.get("CLAUDE_CODE_SESSION_ID") or None
        return cls(session_id=_checked(session_id), kind=_kind(env.get("EXPEDITOR_SESSION_KIND")))

    def with_header(self, headers: Mapping[str, str] | None) -> CallerContext:
        """Over HTTP the header names the caller; the server's own environment names nobody."""
        if headers is None:
            return self
        value = headers.get(CALLER_HEADER)
        return CallerContext(session_id=_checked(value or None), kind=self.kind) if value else self

    def require(self, tool: str) -> None:
        """Refuse a tool the calling kind of session may not use, saying why."""
        if tool not in _MAY_CALL[self.kind]:
            assert self.kind is not None
            raise InvalidInput(
                f"{tool} is not available to a {self.kind.value} session: "
                + {
                    SessionKind.SKILL: "a skill session does its own work and may not launch further sessions",
                    SessionKind.ORCHESTRATOR: "an orchestrator may call run_skill, but only a top-level caller "
                    "may dispatch jobs",
                    SessionKind.PIPELINE: "a pipeline's steps are run by the pipeline runner itself",
                    SessionKind.COMMAND: "a recipe's run step is a plain command",
                }[self.kind]
            )


def _checked(session_id: str | None) -> str | None:
    if session_id is None:
        return None
    try:
        return validate_identifier(session_id, what="caller session id")
    except InvalidIdentifier:
        # An id we cannot use as a file name cannot key a marker; the call still works unmarked.
        return None


def _kind(value: str | None) -> SessionKind | None:
    try:
        return SessionKind(value) if value else None
    except ValueError:
        return None
