"""Who is calling: the session id a tool call's marker is keyed on, and what that session may do.

Over stdio the server is a child of the calling Claude Code session, which sets
``CLAUDE_CODE_SESSION_ID`` for it; ``EXPEDITOR_SESSION_ID`` overrides it for callers that are
not Claude Code. Over HTTP a caller is its bearer token: a session expeditor launched presents its
own token (:mod:`expeditor.runs.credentials`), which names it, its kind and who launched it; the
server's ``http_token`` (or no token, when none is set) makes a top-level caller that names no
session. ``X-Expeditor-Caller-Session``, which older configs sent, is ignored: a header a caller
writes for itself could name any session. ``_meta`` carries no session id.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from expeditor.errors import InvalidIdentifier, InvalidInput
from expeditor.executor.models import SessionKind
from expeditor.ids import validate_identifier
from expeditor.runs.credentials import SessionCredential, SessionCredentials

__all__ = ["CALLER_HEADER", "CallerContext", "bearer_token"]

# Sent by configs expeditor wrote before per-session tokens; never read for identity.
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
    """The calling session's id (None when unknown: then no marker is written), its kind, the sessions that
    launched it (nearest first, known for sessions this server launched), and whether it may stop any session
    of this server (the server token's holder, or the one client of a stdio server)."""

    session_id: str | None
    kind: SessionKind | None
    launched_by: tuple[str, ...] = ()
    may_cancel_any: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CallerContext:
        """The caller of a stdio server: the process that started it, which launched every session it runs."""
        session_id = env.get("EXPEDITOR_SESSION_ID") or env.get("CLAUDE_CODE_SESSION_ID") or None
        return cls(session_id=_checked(session_id), kind=_kind(env.get("EXPEDITOR_SESSION_KIND")), may_cancel_any=True)

    @classmethod
    def of_session(cls, credential: SessionCredential) -> CallerContext:
        """The caller a session token stands for: exactly that session, with its kind."""
        return cls(session_id=credential.session_id, kind=credential.kind, launched_by=credential.launched_by)

    def over_http(
        self, authorization: str | None, *, server_token: str | None, sessions: SessionCredentials
    ) -> CallerContext | None:
        """Who an HTTP request's ``Authorization`` header says is calling; None when it proves nobody.

        ``self`` is the server's own environment: a top-level caller keeps its kind (a server a skill started
        for itself is still a skill's) but names no session, so no marker is held for anyone on its word.
        """
        top_level = CallerContext(session_id=None, kind=self.kind, may_cancel_any=True)
        token = bearer_token(authorization)
        if token is None:
            return top_level if authorization is None and not server_token else None
        if server_token and hmac.compare_digest(token.encode(), server_token.encode()):
            return top_level
        credential = sessions.identify(token)
        return None if credential is None else CallerContext.of_session(credential)

    def chain(self) -> tuple[str, ...]:
        """The sessions a session this caller launches is launched by: the caller, then its own launchers."""
        return self.launched_by if self.session_id is None else (self.session_id, *self.launched_by)

    def may_cancel(self, launched_by: tuple[str, ...]) -> bool:
        """Whether this caller may stop a session launched by ``launched_by`` (nearest first)."""
        return self.may_cancel_any or (self.session_id is not None and self.session_id in launched_by)

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


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


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
