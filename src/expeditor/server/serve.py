"""``expeditor serve``: run the server over stdio (default) or streamable HTTP.

Over stdio, stdout is the protocol: nothing here prints; logs go to stderr and the log file.
Over HTTP the server binds to 127.0.0.1 by default, keeps the SDK's DNS-rebinding protection
on, and requires ``Authorization: Bearer <http_token>`` when a token is set.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any, Literal

import anyio
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from expeditor.config import Settings
from expeditor.server.app import build_server

__all__ = ["serve"]

logger = logging.getLogger(__name__)


class BearerTokenMiddleware(BaseHTTPMiddleware):
    """Refuse every request that does not carry the configured static bearer token."""

    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self._expected = f"Bearer {token}".encode()

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, self._expected):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        return await call_next(request)


def serve(
    settings: Settings,
    *,
    transport: Literal["stdio", "http"] = "stdio",
    host: str | None = None,
    port: int | None = None,
) -> int:
    if transport == "stdio":
        server = build_server(settings)
        anyio.run(server.run_stdio_async)
        return 0
    import uvicorn

    bind_host = host or settings.http_host
    bind_port = port or settings.http_port
    url = f"http://{bind_host}:{bind_port}/mcp"
    server = build_server(settings, http_url=url)
    app = server.streamable_http_app(host=bind_host)
    if settings.http_token:
        app.add_middleware(BearerTokenMiddleware, token=settings.http_token)
    logger.info("serving MCP over HTTP at %s", url)
    config = uvicorn.Config(app, host=bind_host, port=bind_port, log_level="warning", lifespan="on")
    anyio.run(uvicorn.Server(config).serve)
    return 0
