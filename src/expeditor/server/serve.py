"""``expeditor serve``: run the server over stdio (default) or streamable HTTP.

Over stdio, stdout is the protocol: nothing here prints; logs go to stderr and the log file.
Over HTTP the server binds to 127.0.0.1 by default and requires ``Authorization: Bearer <http_token>``
when a token is set, or the token of a session it launched (which says who is calling); a bind
reachable from other machines needs a token (or ``--insecure-no-token``), and DNS-rebinding
protection stays on for every bind (:mod:`expeditor.server.http_access`).

Once it listens, the HTTP server says so on stderr: ``expeditor: serving MCP on http://HOST:PORT/mcp``.

SIGINT and SIGTERM take one path: every live session is cancelled with ``shutdown_grace``
(Claude Code sends SIGTERM 100 ms after SIGINT and SIGKILL about 400 ms later), the runs end as
``cancelled`` with the signal in their reason, their markers are removed, and the server stops the
way it stops when its client leaves: over stdio its input ends (whether or not the client still
holds it open), over HTTP uvicorn stops accepting and the application shuts down. It exits 0.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Generator
from typing import Literal

import anyio
import uvicorn

from expeditor.config import Settings
from expeditor.errors import Unusable
from expeditor.executor import OWN_CHILDREN
from expeditor.executor.registry import SessionRegistry
from expeditor.runs import become_subreaper, kill_leftovers, reap_exited
from expeditor.server.app import StateHolder, build_server
from expeditor.server.http_access import (
    BearerTokenMiddleware,
    HostOriginMiddleware,
    check_bind_is_protected,
    mcp_url,
    transport_security,
)
from expeditor.server.stdio_input import relayed_stdin

__all__ = ["serve", "stop_on_signals"]

logger = logging.getLogger(__name__)

# After a signal: how long open HTTP requests may take to finish before uvicorn cancels them (a client's
# event stream stays open until it is closed), and how long the whole stop may take before it is cancelled.
_GRACEFUL_BOUND = 3
_STOP_BOUND = 30.0


async def stop_on_signals(holder: StateHolder, stop: Callable[[], None], serving: anyio.CancelScope) -> None:
    """On the first SIGINT or SIGTERM, end every live session quickly, then ``stop`` serving.

    Later signals only say the stop is under way (Claude Code sends SIGTERM 100 ms after SIGINT): left to their
    default action they would kill the process in the middle of its teardown. If serving has not ended
    ``_STOP_BOUND`` seconds after ``stop``, it is cancelled.
    """
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for received in signals:
            name = signal.Signals(received).name
            state = holder.state
            if state is not None:
                await state.supervisor.shut_down(f"the expeditor server received {name}")
            stop()
            break
        with anyio.move_on_after(_STOP_BOUND):
            async for received in signals:
                logger.info("received %s while stopping", signal.Signals(received).name)
        logger.warning("the server had not stopped %.0f s after a signal: cancelling it", _STOP_BOUND)
        serving.cancel()


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


async def _serve_until_signalled(
    run: Callable[[], Awaitable[None]], stop: Callable[[], None], holder: StateHolder, settings: Settings
) -> None:
    async with anyio.create_task_group() as group:
        group.start_soon(stop_on_signals, holder, stop, group.cancel_scope)
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
    if transport == "stdio":
        return _serve_stdio(settings)
    return _serve_http(
        settings, host or settings.http_host, port or settings.http_port, insecure_no_token=insecure_no_token
    )


def _served() -> int:
    """The exit status of a server that has stopped and torn everything down.

    The interpreter's last collections at exit would walk every object the SDK and pydantic built (close to a
    second on a busy machine) with nothing left to release: frozen, they are skipped, so a signalled server
    is gone at once (Claude Code kills it 500 ms after its SIGINT).
    """
    gc.freeze()
    return 0


def _serve_stdio(settings: Settings) -> int:
    holder = StateHolder()
    server = build_server(settings, holder=holder)
    with relayed_stdin() as relay:
        stop = relay.end if relay is not None else lambda: None
        anyio.run(_serve_until_signalled, server.run_stdio_async, stop, holder, settings)
    return _served()


class _HttpServer(uvicorn.Server):
    """uvicorn, stopped by our signal handler and introducing itself once it listens."""

    def __init__(self, config: uvicorn.Config, ready_line: str) -> None:
        super().__init__(config)
        self._ready_line = ready_line
        self.startup_failure: str | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None]:
        # Our handler, not uvicorn's, decides what SIGINT and SIGTERM do.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        except SystemExit as exc:
            # uvicorn exits when it cannot listen (a port in use), after logging why and shutting the application
            # down; raised through the task group it would end in a traceback. Its context is the reason.
            reason = exc.__context__
            self.startup_failure = str(reason) if reason is not None else "the application did not start"
            self.should_exit = True
            return
        if self.started:
            print(self._ready_line, file=sys.stderr, flush=True)

    def stop(self) -> None:
        """Stop as uvicorn stops on SIGTERM: no new connection, open requests end, then the application's own
        shutdown. Through ``handle_exit``, which the SDK's event-stream responses also hear: a client's open
        stream ends then, rather than being cancelled with a traceback when the graceful time is up."""
        self.handle_exit(signal.SIGTERM, None)


def _serve_http(settings: Settings, bind_host: str, bind_port: int, *, insecure_no_token: bool) -> int:
    check_bind_is_protected(bind_host, token=settings.http_token, insecure_no_token=insecure_no_token)
    url = mcp_url(bind_host, bind_port)
    holder = StateHolder()
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
    # log_config=None: uvicorn's lines go through expeditor's logging (logs.py) like every other line.
    config = uvicorn.Config(
        app,
        host=bind_host,
        port=bind_port,
        log_config=None,
        log_level=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=_GRACEFUL_BOUND,
    )
    protection = "bearer token required" if settings.http_token else "no token"
    http_server = _HttpServer(config, f"expeditor: serving MCP on {url} ({protection})")
    anyio.run(_serve_until_signalled, http_server.serve, http_server.stop, holder, settings)
    if http_server.startup_failure is not None:
        raise Unusable(f"could not serve MCP on {url}: {http_server.startup_failure}")
    return _served()
