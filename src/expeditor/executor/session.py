"""What the runner knows about a running session, shared with the watchers that judge it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import anyio
import psutil

from expeditor.config import RunPolicy
from expeditor.executor.models import DecidedBy, SessionKind, Signal, Termination

__all__ = ["LiveSession", "SignalClock", "Verdict", "Watcher"]


class SignalClock:
    """When each liveness signal last moved, in event-loop time and in wall-clock time."""

    def __init__(self) -> None:
        start = anyio.current_time()
        wall = time.time()
        self._loop: dict[Signal, float] = {}
        self._wall: dict[Signal, float] = {}
        self.started_loop = start
        self.started_wall = wall
        self.changes = 0

    def moved(self, signal: Signal) -> None:
        self._loop[signal] = anyio.current_time()
        self._wall[signal] = time.time()
        self.changes += 1

    def last(self, signal: Signal) -> float:
        """Event-loop time the signal last moved, or the session's start if it never did."""
        return self._loop.get(signal, self.started_loop)

    def last_any(self, signals: tuple[Signal, ...]) -> float:
        return max(self.last(signal) for signal in signals)

    def wall(self) -> dict[Signal, float]:
        return dict(self._wall)


@dataclass(frozen=True)
class Verdict:
    """A decisive event: how the run ends and why. ``kill_grace`` overrides the policy's."""

    termination: Termination
    decided_by: DecidedBy
    reason: str
    kill_grace: float | None = None


@dataclass
class LiveSession:
    """One running session: identity, timings and the evidence gathered so far."""

    session_id: str
    caller_session_id: str | None
    kind: SessionKind
    process: psutil.Process
    pgid: int
    cwd: Path
    transcript_path: Path | None
    transcript_offset: int
    policy: RunPolicy
    marker_dir: Path | None
    clock: SignalClock = field(default_factory=SignalClock)
    stdout_bytes: int = 0
    suppressed_by: dict[str, float] = field(default_factory=dict[str, float])
    known_descendants: dict[int, psutil.Process] = field(default_factory=dict[int, psutil.Process])

    @property
    def pid(self) -> int:
        return self.process.pid


class Watcher(Protocol):
    """Watches one signal of a session; returns a verdict only when the session must end."""

    async def watch(self, session: LiveSession) -> Verdict: ...
