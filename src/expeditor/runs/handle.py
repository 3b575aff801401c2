"""A launched run as whoever launched it holds it: what it is doing now, its result once it ends, a way to stop it.

A handle is driven once: in the caller's own task (``run``, the blocking tool call) or in a task
group that outlives the call (``run_in_background``), so a transport can poll ``status`` and
``done`` and collect ``result`` later. Either way the run's marker, records and kill path are the
supervisor's, and cancelling the task that drives it kills the session's tree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio

from expeditor.errors import ExpeditorError
from expeditor.executor import RunControl, RunResult, SessionKind

__all__ = ["RunHandle", "describe_activity"]

logger = logging.getLogger(__name__)


def describe_activity(control: RunControl | None, started: float) -> str:
    """One line on where a run stands: starting, running with no output yet, or its last activity."""
    elapsed = time.time() - started
    if control is not None and control.remote_activity is not None:
        return f"{control.remote_activity}, {elapsed:.0f}s elapsed"
    if control is None or control.session is None:
        return f"starting, {elapsed:.0f}s elapsed"
    session = control.session
    moved = session.clock.wall()
    if not moved:
        return f"session {session.session_id} running {elapsed:.0f}s, no output yet"
    signal, at = max(moved.items(), key=lambda item: item[1])
    return (
        f"session {session.session_id} running {elapsed:.0f}s; last activity {time.time() - at:.0f}s ago "
        f"({signal.value})"
    )


class RunHandle:
    """One supervised run, from launch to its recorded end."""

    def __init__(
        self,
        session_id: str,
        kind: SessionKind,
        caller_session_id: str | None,
        control: RunControl,
        body: Callable[[RunHandle], Awaitable[RunResult]],
        *,
        launched_by: tuple[str, ...] = (),
    ) -> None:
        self.session_id = session_id
        self.kind = kind
        self.caller_session_id = caller_session_id
        # Every session above this one, nearest first: whoever is in it may cancel this run.
        self.launched_by = launched_by
        self.control = control
        self.started_at = time.time()
        self._body = body
        self._driven = False
        self._ended = anyio.Event()
        self._result: RunResult | None = None
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._ended.is_set()

    def status(self) -> str:
        """The progress line the tools send while the run goes on."""
        return describe_activity(self.control, self.started_at)

    def cancel(self, reason: str, *, grace: float | None = None) -> None:
        """Stop the run: its tree is killed (after ``grace``, else the kill grace) and it ends as cancelled."""
        self.control.cancel(reason, grace=grace)

    async def run(self) -> RunResult:
        """Drive the run in this task to its end; cancelling this call kills the session's tree first."""
        if self._driven:
            raise RuntimeError(f"run {self.session_id} is already being driven")
        self._driven = True
        try:
            self._result = await self._body(self)
            return self._result
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._ended.set()

    async def run_in_background(self) -> None:
        """Drive the run inside a long-lived task group: its errors stay on the handle for ``result``."""
        try:
            await self.run()
        except ExpeditorError as exc:
            # Refused as it began (a second run of the same session): ``result`` raises it to whoever asks.
            logger.info("session=%s was not run: %s", self.session_id, exc)
        except Exception:
            logger.exception("session=%s: the supervised run failed", self.session_id)

    async def result(self) -> RunResult:
        """Wait for the end of a run driven elsewhere, and return how it ended."""
        await self._ended.wait()
        if self._result is not None:
            return self._result
        if self.control.result is not None:
            # Its driver was cancelled (the runtime shutting down) after the session started and ended.
            return self.control.result
        if isinstance(self._error, Exception):
            raise self._error
        raise ExpeditorError(f"run {self.session_id} was stopped before its session started")
