"""Watchers, each owning one liveness signal of a session.

- ``TranscriptWatcher`` ends the run as ``stale`` after ``stale_threshold`` of silence. Transcript
  growth past the size at launch is movement, dated by the file's mtime, so the file is looked at
  when a verdict is due instead of being polled.
- ``StdoutWatcher`` ends it as ``idle_stall`` after ``idle_timeout`` without stdout bytes (the
  runner's reader records them). It only runs when its threshold is the stricter one, so one
  silence gets one verdict. For a plain command (no transcript) stderr counts as output too:
  compilers, test runners and package managers report their progress there.
- ``ChildrenWatcher`` samples the session's descendants from one shared process-table snapshot
  and records movement; it never ends a run.

A silence counts from the last movement of *any* liveness signal, and a verdict waits while
the suppression policy finds an active marker for the session (re-checked every ``poll_interval``).
An idle session's watchers therefore wake once per threshold, not once per poll. The silence
watchers read the time and sleep through the suppression policy's ``Clock`` (the system's by default).
"""

from __future__ import annotations

import anyio

from expeditor.config import RunPolicy
from expeditor.executor import LaunchSpec, WatcherFactory
from expeditor.executor.models import DecidedBy, Signal, Termination
from expeditor.executor.session import LiveSession, Verdict, Watcher
from expeditor.monitor.process_table import ProcessTable
from expeditor.monitor.suppression import SYSTEM_CLOCK, Clock, SuppressionPolicy

__all__ = ["LIVENESS_SIGNALS", "ChildrenWatcher", "SilenceWatcher", "default_watchers", "standard_watchers"]

LIVENESS_SIGNALS = (Signal.TRANSCRIPT, Signal.STDOUT, Signal.CHILDREN)
COMMAND_LIVENESS_SIGNALS = (Signal.STDOUT, Signal.STDERR, Signal.CHILDREN)
_SIGNAL_NAMES = {
    Signal.TRANSCRIPT: "transcript",
    Signal.STDOUT: "stdout",
    Signal.STDERR: "stderr",
    Signal.CHILDREN: "child-process",
}


class SilenceWatcher:
    """Ends the run once every liveness signal is silent past the threshold and nothing suppresses it."""

    def __init__(
        self,
        signal: Signal,
        termination: Termination,
        decided_by: DecidedBy,
        setting: str,
        signals: tuple[Signal, ...] = LIVENESS_SIGNALS,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.signal = signal
        self.termination = termination
        self.decided_by = decided_by
        self.setting = setting
        self.signals = signals
        self.clock = clock

    def threshold(self, policy: RunPolicy) -> float:
        return policy.stale_threshold if self.signal is Signal.TRANSCRIPT else policy.idle_timeout

    async def watch(self, session: LiveSession) -> Verdict:
        policy = session.policy
        threshold = self.threshold(policy)
        suppression = SuppressionPolicy(session, clock=self.clock)
        suppressing = False
        while True:
            session.observe_transcript()
            now = self.clock.loop()
            moved_at = session.clock.last_any(self.signals)
            # While a marker vouches, look again every poll; otherwise sleep until a verdict could be due.
            # Movement only pushes that moment later, so sleeping until then misses nothing.
            due = max(moved_at, suppression.vouched_at) + threshold
            if not suppressing and now < due:
                await self.clock.sleep(due - now)
                continue
            if suppressing and moved_at > suppression.vouched_at:
                suppressing = False  # the session moved: this silence is over
                continue
            decision = suppression.decide(moved_at)
            if decision.suppress:
                suppressing = True
                await self.clock.sleep(policy.poll_interval)
                continue
            if suppressing and not decision.note:
                # The marker went away (its call returned): give the session a threshold to show it.
                suppressing = False
                continue
            names = [_SIGNAL_NAMES[signal] for signal in self.signals]
            reason = (
                f"no {', '.join(names[:-1])} or {names[-1]} activity for {now - moved_at:.1f}s "
                f"(its {self.setting} is {threshold:g}s)"
            )
            if decision.note:
                reason += f"; {decision.note}"
            elif suppression.vouched_at > moved_at:
                reason += f"; its execution marker stopped vouching for it {now - suppression.vouched_at:.1f}s ago"
            elif policy.markers_enabled and session.marker_dir is not None:
                reason += "; no active execution marker vouched for it"
            return Verdict(self.termination, self.decided_by, reason)


class TranscriptWatcher(SilenceWatcher):
    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(Signal.TRANSCRIPT, Termination.STALE, DecidedBy.TRANSCRIPT, "stale_threshold", clock=clock)


class StdoutWatcher(SilenceWatcher):
    def __init__(
        self,
        signals: tuple[Signal, ...] = LIVENESS_SIGNALS,
        setting: str = "idle_timeout",
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(Signal.STDOUT, Termination.IDLE_STALL, DecidedBy.STDOUT, setting, signals, clock=clock)


class ChildrenWatcher:
    """Records descendant activity as a liveness signal; returns no verdict of its own."""

    def __init__(self, table: ProcessTable) -> None:
        self.table = table

    async def watch(self, session: LiveSession) -> Verdict:
        interval = session.policy.children_interval
        previous = self.table.activity(session)
        while True:
            await anyio.sleep(interval)
            current = self.table.activity(session)
            cpu_cores = (current.cpu_seconds - previous.cpu_seconds) / max(current.taken - previous.taken, 1e-6)
            if current.pids != previous.pids or cpu_cores > session.policy.children_cpu_floor:
                session.clock.moved(Signal.CHILDREN)
            previous = current


def default_watchers(policy: RunPolicy, table: ProcessTable, *, has_transcript: bool = True) -> list[Watcher]:
    """The watchers of one session: transcript and stdout silence, and child activity.

    With equal thresholds the transcript watcher alone judges, so a silence gets one verdict.
    """
    watchers: list[Watcher] = [ChildrenWatcher(table)]
    if has_transcript:
        watchers.append(TranscriptWatcher())
    if not has_transcript:
        # Without a transcript this is the one silence watcher: it speaks of the setting people set.
        watchers.append(StdoutWatcher(COMMAND_LIVENESS_SIGNALS, "stale_threshold"))
    elif policy.idle_timeout < policy.stale_threshold:
        watchers.append(StdoutWatcher())
    return watchers


def standard_watchers() -> WatcherFactory:
    """The watcher factory of one executor: every session it launches gets ``default_watchers``, and all
    of them share one process table, so child activity costs one walk per interval however many run."""
    table = ProcessTable()

    def factory(spec: LaunchSpec, policy: RunPolicy) -> list[Watcher]:
        return default_watchers(policy, table, has_transcript=spec.transcript_path is not None)

    return factory
