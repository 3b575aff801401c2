"""The supervisor: every session this server launched, so shutdown and cancel_session reach them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from expeditor.config import Settings
from expeditor.executor import ClaudeCodeExecutor, RunControl, RunRequest, RunResult, SessionKind
from expeditor.ids import new_session_id
from expeditor.server.caller import CallerContext
from expeditor.server.child_config import allowed_tools, child_mcp_config

__all__ = ["LiveRun", "Supervisor"]

logger = logging.getLogger(__name__)


@dataclass
class LiveRun:
    """A run in flight: its session id, its caller and the handle that cancels it."""

    session_id: str
    kind: SessionKind
    caller_session_id: str | None
    control: RunControl
    started_at: float = field(default_factory=time.time)


class Supervisor:
    """Launches sessions through the executor and keeps a handle on each until it ends."""

    def __init__(
        self,
        settings: Settings,
        executor: ClaudeCodeExecutor,
        *,
        http_url: str | None = None,
        on_finished: Callable[[LiveRun, RunResult], None] | None = None,
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.http_url = http_url
        self.on_finished = on_finished
        self.live: dict[str, LiveRun] = {}
        self._changed = anyio.Event()

    def prepare(self, request: RunRequest) -> RunRequest:
        """Choose the child's id now, so its generated MCP config can name it."""
        session_id = request.resume_session_id or request.session_id or new_session_id()
        config = child_mcp_config(self.settings, kind=request.kind, child_session_id=session_id, http_url=self.http_url)
        update: dict[str, object] = {"session_id": None if request.resume_session_id else session_id}
        if config is not None and request.mcp_config is None:
            update["mcp_config"] = config
            update["allowed_tools"] = (*request.allowed_tools, *allowed_tools(request.kind))
        return request.model_copy(update=update)

    async def run(self, request: RunRequest, caller: CallerContext, *, control: RunControl | None = None) -> RunResult:
        """Run one session for ``caller``; cancelling this call kills the session's tree first."""
        request = self.prepare(request)
        control = control or RunControl()
        session_id = request.resume_session_id or request.session_id
        assert session_id is not None
        live = LiveRun(session_id, request.kind, caller.session_id, control)
        self.live[session_id] = live
        try:
            result = await self.executor.run(
                request,
                marker_dir=self.settings.markers_path,
                caller_session_id=caller.session_id,
                control=control,
            )
        finally:
            del self.live[session_id]
            self._changed.set()
            self._changed = anyio.Event()
            if self.on_finished is not None and control.result is not None:
                self.on_finished(live, control.result)
        return result

    async def wait_until_idle(self) -> None:
        """Return once no run of this server is live."""
        while self.live:
            await self._changed.wait()

    def cancel(self, session_id: str, reason: str, *, grace: float | None = None) -> bool:
        """Cancel one live run of this server; False when it is not one of ours."""
        live = self.live.get(session_id)
        if live is None:
            return False
        live.control.cancel(reason, grace=grace)
        return True

    def cancel_all(self, reason: str, *, grace: float) -> int:
        """Cancel every live run with a short grace (server shutdown); returns how many."""
        for live in list(self.live.values()):
            live.control.cancel(reason, grace=grace)
        if self.live:
            logger.info("cancelling %d live sessions: %s", len(self.live), reason)
        return len(self.live)
