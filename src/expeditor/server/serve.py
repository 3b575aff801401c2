"""``expeditor serve``: run the server over stdio (default) or streamable HTTP.

Over stdio, stdout is the protocol: nothing here prints; logs go to stderr and the log file.
Over HTTP the server binds to 127.0.0.1 by default and requires ``Authorization: Bearer <http_token>``
when a token is set, or the token of a session it launched (which says who is calling); a bind
reachable from other machines needs a token (or ``--insecure-no-token``), and DNS-rebinding
protection stays on for every bind (:mod:`expeditor.server.http_access`).

SIGINT and SIGTERM take one path: every live session is cancelled with ``shutdown_grace``
(Claude Code sends SIGTERM 100 ms after SIGINT and SIGKILL about 400 ms later), the runs end as
``cancelled`` with the signal in their reason, their markers are removed, and the server exits.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Generator
from typing import Literal

import anyio

from expeditor.config import Settings
from expeditor.executor import OWN_CHILDREN
from expeditor.executor.registry import SessionRegistry
from expeditor.runs import become_subreaper, kill_leftovers, reap_exited
from expeditor.server.app import StateHolder, build_server
from expeditor.server.http_access import (
    BearerTokenMiddleware,
    HostOriginMiddleware,
    check_bind_is_protected,
    transport_security,
)

__all__ = ["serve", "shut_down_on_signals"]

logger = logging.getLogger(__name__)


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
    insecure_no_token: bool = False,
) -> int:
    holder = StateHolder()
    if transport == "stdio":
        server = build_server(settings, holder=holder)
        anyio.run(_serve_until_signalled, server.run_stdio_async, holder, settings)
        return 0
    import uvicorn

    bind_host = host or settings.http_host
    bind_port = port or settings.http_port
    check_bind_is_protected(bind_host, token=settings.http_token, insecure_no_token=insecure_no_token)
    url = f"http://{bind_host}:{bind_port}/mcp"
    server = build_server(settings, http_url=url, holder=holder)
    security = transport_security(
        bind_host,
        bind_port,
        allowed_hosts=settings.http_allowed_hosts,
        allowed_origins=settings.http_allowed_origins,
    )
    app = server.streamable_http_app(host=bind_host, transport_security=security)
    # The middleware added last runs first: Host and Origin are checked before the bearer token.
    app.add_middleware(
        BearerTokenMiddleware, token=settings.http_token, session_token_is_live=holder.session_token_is_live
    )
    app.add_middleware(HostOriginMiddleware, security=security)
    logger.info("serving MCP over HTTP at %s", url)
    config = uvicorn.Config(app, host=bind_host, port=bind_port, log_level="warning", lifespan="on")

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None]:
            # Our handler, not uvicorn's, decides what SIGINT and SIGTERM do.
            yield

    anyio.run(_serve_until_signalled, _Server(config).serve, holder, settings)
    return 0
