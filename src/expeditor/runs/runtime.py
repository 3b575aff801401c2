"""The runtime: everything a process needs to launch supervised runs, built from Settings in one place.

The server's lifespan, ``expeditor run-skill``, ``dispatch``, ``recipe run`` and the demo all open it
the same way: the campaign store (``open_store``), the session containment (a cgroup per session
when the machine allows it, else the process tree), the executor with its watchers, the supervisor
and the job lifecycle. Opening it first reaps what a killed predecessor left behind; closing it
stops every run still in flight, within ``shutdown_grace``, then closes the store.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass

import anyio

from expeditor.config import Settings
from expeditor.executor import ClaudeCodeExecutor, SessionContainment, choose_containment
from expeditor.homes import describe_home
from expeditor.monitor import standard_watchers
from expeditor.runs.jobs import JobLifecycle
from expeditor.runs.reaper import reap_leftovers
from expeditor.runs.supervisor import Supervisor
from expeditor.state import CampaignStore, open_store

__all__ = ["Runtime", "build_executor", "open_runtime"]

logger = logging.getLogger(__name__)

# Beyond shutdown_grace, how long closing waits for the last trees to die (SIGKILL is immediate).
_CLOSE_BOUND = 2.0


@dataclass(frozen=True)
class Runtime:
    """The run service of one process."""

    settings: Settings
    store: CampaignStore
    executor: ClaudeCodeExecutor
    supervisor: Supervisor
    jobs: JobLifecycle


def build_executor(
    settings: Settings, *, env: Mapping[str, str] | None = None, containment: SessionContainment | None = None
) -> ClaudeCodeExecutor:
    """The Claude Code executor with the standard watchers; ``env`` is what its children inherit.

    Without ``containment`` its sessions are held by their process tree (the fallback).
    """
    return ClaudeCodeExecutor(settings, base_env=env, watcher_factory=standard_watchers(), containment=containment)


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    env: Mapping[str, str] | None = None,
    http_url: str | None = None,
    closing_reason: str = "expeditor is shutting down",
    owner_kind: str = "process",
) -> AsyncGenerator[Runtime]:
    """Open the store, reap what a killed predecessor left, and yield the runtime.

    ``env`` is the environment launched sessions inherit (default: this process's); ``http_url``
    is set when this process serves MCP over HTTP, so the sessions it launches call back there.
    On exit every run still live is cancelled with ``closing_reason`` and awaited (bounded).
    ``owner_kind`` names this process in a shared store's owner leases (server, pipeline, dispatch…).
    """
    containment = choose_containment(settings.containment)
    logger.info("containment: %s (%s)", containment.kind, containment.reason)
    logger.info("home: %s", describe_home(settings.home))
    store = open_store(settings, owner_kind=owner_kind)
    try:
        executor = build_executor(settings, env=dict(os.environ if env is None else env), containment=containment)
        supervisor = Supervisor(settings, executor, http_url=http_url, store=store)
        await reap_leftovers(settings, executor.registry, store, containment)
        runtime = Runtime(
            settings=settings,
            store=store,
            executor=executor,
            supervisor=supervisor,
            jobs=JobLifecycle(store, max_concurrent=settings.max_concurrent_dispatches),
        )
        # The keeper outlives every run of this runtime: it is stopped only once they all ended.
        async with containment.kept():
            try:
                yield runtime
            finally:
                supervisor.cancel_all(closing_reason, grace=settings.shutdown_grace)
                with anyio.CancelScope(shield=True), anyio.move_on_after(settings.shutdown_grace + _CLOSE_BOUND):
                    await supervisor.wait_until_idle()
    finally:
        store.close()
        containment.close()
