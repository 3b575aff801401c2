"""Per-session credentials: the bearer token each session launched by an HTTP server presents when it calls back.

The server's own ``http_token`` is for people and their clients. Every session the supervisor launches while
serving HTTP gets a token of its own, written into the private MCP config only that session reads; the token is
bound here, in the server's memory, to the session's id, its kind and the chain of sessions that launched it,
and it stops working the moment the run ends. Over HTTP a caller is therefore who its token says: a header it
chooses never sets its identity or its kind.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from expeditor.executor.models import SessionKind

__all__ = ["SessionCredential", "SessionCredentials", "new_session_token"]


def new_session_token() -> str:
    """A fresh random token (256 bits), unguessable by any session that has not been given it."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class SessionCredential:
    """What a session token stands for: the session, its kind, and who launched it (nearest first)."""

    session_id: str
    kind: SessionKind
    launched_by: tuple[str, ...]


class SessionCredentials:
    """The live session tokens of one server: issued when a run starts, revoked when it ends."""

    def __init__(self) -> None:
        self._by_token: dict[str, SessionCredential] = {}

    def grant(self, token: str, credential: SessionCredential) -> None:
        self._by_token[token] = credential

    def revoke(self, token: str) -> None:
        self._by_token.pop(token, None)

    def identify(self, token: str) -> SessionCredential | None:
        """The session ``token`` belongs to while its run is live, else None.

        Compared in constant time with each live token, so response times do not leak a token's prefix.
        """
        found: SessionCredential | None = None
        for live, credential in list(self._by_token.items()):
            if hmac.compare_digest(live.encode(), token.encode()):
                found = credential
        return found

    def __len__(self) -> int:
        return len(self._by_token)
