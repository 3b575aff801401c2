"""What the runner knows about a running session, shared with the watchers that judge it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
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
        self.listener: Callable[[], None] | None = None

    def moved(self, signal: Signal, *, at_wall: float | None = None) -> None:
        """Record movement now, or at ``at_wall`` (epoch seconds, e.g. a file's mtime) if given."""
        loop_now, wall_now = anyio.current_time(), time.time()
        if at_wall is None or at_wall > wall_now:
            at_wall = wall_now
        self._loop[signal] = loop_now - (wall_now - at_wall)
        self._wall[signal] = at_wall
        if self.listener is not None:
            self.listener()

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
    kind: SessionKind
    process: psutil.Process
    pgid: int
    cwd: Path
    transcript_path: Path | None
    transcript_offset: int
    policy: RunPolicy
    marker_dir: Path | None
    cgroup: Path | None = None
    """The session's own control group, when it is contained by one."""
    clock: SignalClock = field(default_factory=SignalClock)
    stdout_bytes: int = 0
    suppressed_by: dict[str, float] = field(default_factory=dict[str, float])
    known_descendants: dict[int, psutil.Process] = field(default_factory=dict[int, psutil.Process])

    _transcript_size: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def observe_transcript(self) -> None:
        """Record transcript growth since the last look, dated by the file's mtime.

        The mtime is the exact time of the last write, so the transcript need not be polled:
        looking when a verdict is due gives the same answer as watching all along.
        """
        if self.transcript_path is None:
            return
        try:
            stat = os.stat(self.transcript_path)
        except OSError:
            return
        known = self.transcript_offset if self._transcript_size is None else self._transcript_size
        if stat.st_size != known:
            self._transcript_size = stat.st_size
            self.clock.moved(Signal.TRANSCRIPT, at_wall=stat.st_mtime)


class Watcher(Protocol):
    """Watches one signal of a session; returns a verdict only when the session must end."""

    async def watch(self, session: LiveSession) -> Verdict: ...
