"""Progress notifications during long tool calls.

Claude Code aborts a tool call that sent nothing for 30 minutes over stdio (5 over HTTP); a
run_skill or dispatch may take hours. Every ``interval`` the call reports its elapsed time and
where its run stands (``describe_activity``), which also resets the client's idle clock.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

import anyio

from expeditor.executor import RunControl
from expeditor.runs import describe_activity

__all__ = ["reporting_progress"]

Report = Callable[[float, str], Awaitable[None]]


@contextlib.asynccontextmanager
async def reporting_progress(
    report: Report, interval: float, control: RunControl, *, enabled: bool = True
) -> AsyncGenerator[None]:
    """Call ``report(elapsed, message)`` every ``interval`` seconds while the body runs ``control``'s run.

    Not ``enabled`` (a call served as an MCP task, whose client polls instead): the body just runs.
    """
    if not enabled:
        yield
        return
    started = time.time()

    async def beat() -> None:
        while True:
            await anyio.sleep(interval)
            await report(time.time() - started, describe_activity(control, started))

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
