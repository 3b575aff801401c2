"""``expeditor serve``: run the server over stdio (default) or streamable HTTP.

Over stdio, stdout is the protocol: nothing here prints; logs go to stderr and the log file.
Over HTTP the server binds to 127.0.0.1 by default, keeps the SDK's DNS-rebinding protection
on, and requires ``Authorization: Bearer <http_token>`` when a token is set.

SIGINT and SIGTERM take one path: every live session is cancelled with ``shutdown_grace``
(Claude Code sends SIGTERM 100 ms after SIGINT and SIGKILL about 400 ms later), the runs end as
``cancelled`` with the signal in their reason, their markers are removed, and the server exits.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import signal
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Literal

import anyio
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from expeditor.config import Settings
from expeditor.executor import OWN_CHILDREN
from expeditor.executor.registry import SessionRegistry
from expeditor.runs import become_subreaper, kill_leftovers, reap_exited
from expeditor.server.app import StateHolder, build_server

__all__ = ["serve", "shut_down_on_signals"]

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


async def shut_down_on_signals(holder: StateHolder, settings: Settings, serving: anyio.CancelScope) -> None:
    """Wait for SIGINT or SIGTERM, end every live session quickly, then stop serving."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for received in signals:
            name = signal.Signals(received).name
            state = holder.state
            if state is not None:
                await state.supervisor.shut_down(f"the expeditor server received {name}")
            serving.cancel()
            return


async def reap_adopted_orphans(interval: float, holder: StateHolder) -> None:
    """As a subreaper, collect the exit statuses of adopted orphans so none lingers as a zombie, and under the
    process-tree containment kill the adopted orphans of sessions that ended."""
    while True:
        await anyio.sleep(interval)
        if OWN_CHILDREN.spawning:
            continue  # a child being spawned is not yet known as ours
        for pid in reap_exited(OWN_CHILDREN.pids):
            logger.info("reaped adopted orphan pid=%d", pid)
        state = holder.state
        containment = None if state is None else state.runtime.executor.containment
        if state is None or (containment is not None and containment.kind == "cgroup"):
            continue
        registry = state.runtime.executor.registry

        def live_sessions(registry: SessionRegistry = registry) -> list[str]:
            return [entry.session_id for entry in registry.entries()]

        for pid in kill_leftovers(OWN_CHILDREN.pids, live_sessions):
            logger.warning("killed pid=%d, an adopted orphan of a session that has ended", pid)


async def _serve_until_signalled(run: Callable[[], Awaitable[None]], holder: StateHolder, settings: Settings) -> None:
    async with anyio.create_task_group() as group:
        group.start_soon(shut_down_on_signals, holder, settings, group.cancel_scope)
        if become_subreaper():
            group.start_soon(reap_adopted_orphans, settings.children_interval, holder)
        await run()
        group.cancel_scope.cancel()


def serve(
    settings: Settings,
    *,
    transport: Literal["stdio", "http"] = "stdio",
    host: str | None = None,
    port: int | None = None,
) -> int:
    holder = StateHolder()
    if transport == "stdio":
        server = build_server(settings, holder=holder)
        anyio.run(_serve_until_signalled, server.run_stdio_async, holder, settings)
        return 0
    import uvicorn

    bind_host = host or settings.http_host
    bind_port = port or settings.http_port
    url = f"http://{bind_host}:{bind_port}/mcp"
    server = build_server(settings, http_url=url, holder=holder)
    app = server.streamable_http_app(host=bind_host)
    if settings.http_token:
        app.add_middleware(BearerTokenMiddleware, token=settings.http_token)
    logger.info("serving MCP over HTTP at %s", url)
    config = uvicorn.Config(app, host=bind_host, port=bind_port, log_level="warning", lifespan="on")

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None]:
            # Our handler, not uvicorn's, decides what SIGINT and SIGTERM do.
            yield

    anyio.run(_serve_until_signalled, _Server(config).serve, holder, settings)
    return 0
