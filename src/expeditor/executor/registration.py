"""A running session's entry in the live-session registry: written once it runs, kept current while it moves.

The entry is how the next start finds a session whose server died; supervision never depends on it
staying current (a rewrite that fails is logged once and tried again at the next movement).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from expeditor.executor.control import Decision
from expeditor.executor.models import DecidedBy, Termination
from expeditor.executor.registry import SessionEntry, SessionRegistry
from expeditor.executor.session import LiveSession, Verdict
from expeditor.process_identity import process_start_time

if TYPE_CHECKING:
    from expeditor.executor.runner import LaunchSpec

__all__ = ["register"]

logger = logging.getLogger(__name__)

_REGISTRY_REFRESH = 1.0

_OWNER_START = process_start_time(os.getpid()) or 0.0


def _registry_entry(spec: LaunchSpec, session: LiveSession, task_id: str | None) -> SessionEntry:
    return SessionEntry(
        session_id=spec.session_id,
        kind=spec.kind,
        pid=session.pid,
        pid_start_time=session.process.create_time(),
        pgid=session.pgid,
        caller_session_id=spec.caller_session_id,
        run_id=spec.session_id,
        cwd=str(spec.cwd),
        transcript_path=str(spec.transcript_path) if spec.transcript_path else None,
        started_at=session.clock.started_wall,
        owner_pid=os.getpid(),
        owner_start_time=_OWNER_START,
        last_moved=session.clock.wall(),
        cgroup=None if session.cgroup is None else str(session.cgroup),
        task_id=task_id,
    )


def register(
    registry: SessionRegistry, spec: LaunchSpec, session: LiveSession, decision: Decision, *, task_id: str | None
) -> None:
    """Enter the session in the registry, or end it at once: a session nobody could find after a crash must not run.

    Later rewrites (movement timestamps) are best effort: a failure is logged once and retried on the
    next movement, never allowed to end supervision.
    """
    try:
        registry.write(_registry_entry(spec, session, task_id))
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        decision.offer(
            Verdict(
                Termination.LAUNCH_FAILED,
                DecidedBy.EXIT,
                f"its live-session registry entry could not be written: {exc.strerror or exc}{where}; a session "
                "the next start could not find after a crash must not run, so it was killed at once",
                kill_grace=0,
            )
        )
        return
    session.clock.listener = _registry_writer(registry, spec, session, task_id)


def _registry_writer(
    registry: SessionRegistry, spec: LaunchSpec, session: LiveSession, task_id: str | None
) -> Callable[[], None]:
    """A clock listener that rewrites the session's registry entry at most once a second.

    Idle sessions cost nothing; the entry on disk lags the last movement by under a second.
    """
    written = anyio.current_time()

    failing = False

    def on_movement() -> None:
        nonlocal written, failing
        now = anyio.current_time()
        if now - written >= _REGISTRY_REFRESH:
            written = now
            try:
                registry.write(_registry_entry(spec, session, task_id))
            except OSError as exc:
                if not failing:
                    logger.warning("session=%s: its registry entry could not be updated: %s", spec.session_id, exc)
                failing = True
            else:
                failing = False

    return on_movement
