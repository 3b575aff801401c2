"""The handles of one run: the first-wins decision, the caller's RunControl, and what the runner observed."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from expeditor.executor.containment import ContainmentKind
from expeditor.executor.models import DecidedBy, KilledProcess, RunResult, Signal, Termination
from expeditor.executor.session import LiveSession, Verdict
from expeditor.executor.stream import StreamState

__all__ = ["Decision", "ManagedOutcome", "RunControl"]


@dataclass
class ManagedOutcome:
    """What the runner observed from spawn to the last process of the tree."""

    verdict: Verdict
    exit_code: int | None
    stream: StreamState
    stderr_tail: str
    duration_s: float
    transcript_offset: int
    started_at: float | None = None
    ended_at: float | None = None
    killed: list[KilledProcess] = field(default_factory=list[KilledProcess])
    last_moved: dict[Signal, float] = field(default_factory=dict[Signal, float])
    suppressed_by: dict[str, float] = field(default_factory=dict[str, float])
    stdout_tail: str = ""
    """A plain command's output (empty for an agent, whose stdout is stream-json)."""
    containment: ContainmentKind = "tree"


class Decision:
    """First offer wins; later offers are ignored."""

    def __init__(self) -> None:
        self._event = anyio.Event()
        self.verdict: Verdict | None = None

    def offer(self, verdict: Verdict) -> None:
        if self.verdict is None:
            self.verdict = verdict
            self._event.set()

    async def wait(self) -> Verdict:
        await self._event.wait()
        assert self.verdict is not None
        return self.verdict


class RunControl:
    """A handle on one run: see it start, cancel it from elsewhere, read how it ended."""

    def __init__(self, *, task_id: str | None = None) -> None:
        # The MCP task the run serves, if its caller asked for one: the registry shows it to every `status`.
        self.task_id = task_id
        self.started = anyio.Event()
        self.session: LiveSession | None = None
        self.outcome: ManagedOutcome | None = None
        self.result: RunResult | None = None
        self._decision: Decision | None = None
        self._pending: Verdict | None = None
        self.cancel_requested = anyio.Event()
        # A run on another host (a queued dispatch): where it stands, as the waiting call last read its record.
        self.remote_activity: str | None = None

    @property
    def pending(self) -> Verdict | None:
        """A cancellation asked for before the run started: it must not start at all."""
        return self._pending if self._decision is None else None

    def cancel(self, reason: str, *, grace: float | None = None, decided_by: DecidedBy = DecidedBy.CANCEL) -> None:
        """End the run as ``cancelled``; ``grace`` replaces the policy's SIGTERM grace."""
        verdict = Verdict(Termination.CANCELLED, decided_by, reason, kill_grace=grace)
        self.cancel_requested.set()
        if self._decision is None:
            self._pending = self._pending or verdict
        else:
            self._decision.offer(verdict)

    def _attach(self, decision: Decision, session: LiveSession) -> None:
        self._decision = decision
        self.session = session
        if self._pending is not None:
            decision.offer(self._pending)
        self.started.set()
