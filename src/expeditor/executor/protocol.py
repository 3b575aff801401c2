"""The HeadlessExecutor protocol: what the server and the pipeline runner need from an executor."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from expeditor.executor.models import RunRequest, RunResult

__all__ = ["HeadlessExecutor"]


class HeadlessExecutor(Protocol):
    """Runs one headless session to its end.

    ``marker_dir`` is where the watchers of the launched session look for execution markers;
    ``caller_session_id`` is the session waiting on this call: it goes into the child's
    environment (``EXPEDITOR_PARENT_SESSION_ID``), the live-session registry and the result.
    """

    async def run(
        self, request: RunRequest, *, marker_dir: Path | None, caller_session_id: str | None
    ) -> RunResult: ...
