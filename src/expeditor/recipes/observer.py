"""What a pipeline runner tells whoever shows its progress, and the guard that keeps that harmless."""

from __future__ import annotations

import logging
from typing import Protocol

from expeditor.executor import RunResult
from expeditor.state import StepExecution

__all__ = ["GuardedObserver", "PipelineObserver", "SilentObserver"]

logger = logging.getLogger(__name__)


class PipelineObserver(Protocol):
    """Told what the runner does, for live progress; every method must return quickly."""

    def replayed(self, execution: StepExecution) -> None: ...

    def step_started(self, sequence: int, step: str, attempt: int, session_id: str, command: str) -> None: ...

    def step_finished(self, execution: StepExecution, result: RunResult | None) -> None: ...


class SilentObserver:
    """Shows nothing."""

    def replayed(self, execution: StepExecution) -> None:
        pass

    def step_started(self, sequence: int, step: str, attempt: int, session_id: str, command: str) -> None:
        pass

    def step_finished(self, execution: StepExecution, result: RunResult | None) -> None:
        pass


class GuardedObserver:
    """An observer whose failures (its output was closed: ``| head``) never stop the pipeline."""

    def __init__(self, observer: PipelineObserver) -> None:
        self._observer: PipelineObserver | None = observer

    def _call(self, method: str, *args: object) -> None:
        if self._observer is None:
            return
        try:
            getattr(self._observer, method)(*args)
        except (OSError, ValueError, SystemExit) as exc:
            # SystemExit: rich's answer to a broken pipe.
            logger.warning("progress output failed (%r); the pipeline goes on without it", exc)
            self._observer = None

    def replayed(self, execution: StepExecution) -> None:
        self._call("replayed", execution)

    def step_started(self, sequence: int, step: str, attempt: int, session_id: str, command: str) -> None:
        self._call("step_started", sequence, step, attempt, session_id, command)

    def step_finished(self, execution: StepExecution, result: RunResult | None) -> None:
        self._call("step_finished", execution, result)
