"""Progress notifications during long tool calls.

Claude Code aborts a tool call that sent nothing for 30 minutes over stdio (5 over HTTP); a
run_skill or dispatch may take hours. Every ``interval`` the call reports its elapsed time and
what the session last did, which also resets the client's idle clock.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

import anyio

from expeditor.executor.runner import RunControl

__all__ = ["describe_activity", "reporting_progress"]

Report = Callable[[float, str], Awaitable[None]]


def describe_activity(control: RunControl | None, started: float) -> str:
    elapsed = time.time() - started
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


@contextlib.asynccontextmanager
async def reporting_progress(
    report: Report, interval: float, control: Callable[[], RunControl | None]
) -> AsyncGenerator[None]:
    """Call ``report(elapsed, message)`` every ``interval`` seconds while the body runs."""
    started = time.time()

    async def beat() -> None:
        while True:
            await anyio.sleep(interval)
            await report(time.time() - started, describe_activity(control(), started))

    body_error: BaseException | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(beat)
        try:
            yield
        except BaseException as exc:
            body_error = exc
        group.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
