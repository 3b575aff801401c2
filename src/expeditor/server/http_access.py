"""Who may reach the HTTP transport: the bind check at start, then Host/Origin and bearer checks per request.

Order matters. A request's Host and Origin are checked first, so a web page that reached the port by DNS
rebinding is refused (421/403) whatever it carries, and cannot even probe the token; the bearer token is
checked next; the SDK checks Host and Origin again, with the same lists, inside its transport.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from expeditor.errors import InvalidInput
from expeditor.runs.caller import bearer_token

__all__ = [
    "BearerTokenMiddleware",
    "HostOriginMiddleware",
    "check_bind_is_protected",
    "is_loopback",
    "mcp_url",
    "transport_security",
]

logger = logging.getLogger(__name__)

# A loopback name on any port cannot be a rebinding attack (the attacker's page would have to be served from
# this machine), and any port keeps an SSH tunnel (ssh -L 9000:127.0.0.1:8765) working.
_LOOPBACK_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*")
_LOOPBACK_ORIGINS = tuple(f"http://{host}" for host in _LOOPBACK_HOSTS)


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server reachable from this machine only.

    A name other than ``localhost`` counts as reachable from elsewhere: what it resolves to can change.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind_is_protected(bind_host: str, *, token: str | None, insecure_no_token: bool) -> None:
    """Refuse a bind reachable from other machines that no token protects, unless explicitly allowed.

    Anyone who reaches such a port could launch sessions that edit code; ``--insecure-no-token`` is for a
    network the user trusts, and is logged at every start so it is not forgotten.
    """
    if token or is_loopback(bind_host):
        return
    if not insecure_no_token:
        raise InvalidInput(
            f"refusing to serve HTTP on {bind_host} without a token: set EXPEDITOR_HTTP_TOKEN or http_token in "
            "<home>/config.yaml (or pass --insecure-no-token on a network you trust)"
        )
    logger.warning(
        "serving HTTP on %s without a token (--insecure-no-token): anyone who reaches this port can launch "
        "sessions; set EXPEDITOR_HTTP_TOKEN unless every machine on this network is trusted",
        bind_host,
    )


def _authority(host: str, port: int) -> str:
    """``host:port`` as a Host header writes it (IPv6 literals in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def mcp_url(host: str, port: int) -> str:
    """The MCP endpoint of a server bound to ``host:port``."""
    return f"http://{_authority(host, port)}/mcp"


def _has_port(authority: str) -> bool:
    if authority.startswith("["):
        return "]:" in authority
    return ":" in authority


def _admitted(entry: str, authority: str) -> list[str]:
    """A configured entry whose authority names no port admits that name on any port and bare (a proxy on 80 or
    443 sends no port); one with a port admits exactly that."""
    return [entry] if _has_port(authority) else [entry, f"{entry}:*"]


def transport_security(
    bind_host: str, bind_port: int, *, allowed_hosts: tuple[str, ...], allowed_origins: tuple[str, ...]
) -> TransportSecuritySettings:
    """The Host and Origin values a server bound to ``bind_host:bind_port`` accepts; DNS-rebinding protection on.

    The bind address and port (what the server's own children are given), loopback names for a loopback bind,
    and the names a team configured. A request without an Origin (any client but a browser) passes that check.
    """
    bind_authority = _authority(bind_host, bind_port)
    hosts = [bind_authority]
    origins = [f"http://{bind_authority}"]
    if is_loopback(bind_host):
        hosts.extend(_LOOPBACK_HOSTS)
        origins.extend(_LOOPBACK_ORIGINS)
    for host in allowed_hosts:
        hosts.extend(_admitted(host, host))
    for origin in allowed_origins:
        origins.extend(_admitted(origin, origin.partition("://")[2]))
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


class HostOriginMiddleware:
    """Refuse a request whose Host or Origin is not allowed, before anything else looks at it.

    The rule is the SDK's own (exact values, ``name:*`` for any port), applied to every route and ahead of the
    bearer check; the SDK applies it only inside its MCP endpoint.
    """

    def __init__(self, app: ASGIApp, security: TransportSecuritySettings) -> None:
        self._app = app
        self._checker = TransportSecurityMiddleware(security)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = await self._checker.validate_request(Request(scope), is_post=False)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self._app(scope, receive, send)


class BearerTokenMiddleware(BaseHTTPMiddleware):
    """Refuse every request whose bearer token is neither the server's nor a live session's.

    The server's ``token`` is for people and their clients; a session expeditor launched presents its own,
    which works only while that session's run is live (``session_token_is_live``). Without a server token a
    request may carry no token at all (a loopback bind: a person on this machine), but a token it does carry
    must still be live, so a session's ended credential is refused rather than taken for a person's.
    Who the caller is, the tool handlers read from the same header.
    """

    def __init__(self, app: Any, token: str | None, session_token_is_live: Callable[[str], bool]) -> None:
        super().__init__(app)
        self._expected = f"Bearer {token}".encode() if token else None
        self._session_token_is_live = session_token_is_live

    def _admits(self, given: str | None) -> bool:
        if given is None:
            return self._expected is None
        if self._expected is not None and hmac.compare_digest(given.encode(), self._expected):
            return True
        token = bearer_token(given)
        return token is not None and self._session_token_is_live(token)

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if not self._admits(request.headers.get("authorization")):
            # The challenge says a static bearer token is expected: without one, Claude Code starts an OAuth
            # discovery and reports "Dynamic Client Registration rejected" instead of a missing token.
            return JSONResponse(
                {"error": "missing or wrong bearer token"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="expeditor"'},
            )
        return await call_next(request)
