"""What a person (or a dispatching parent) sees while a pipeline runs, and the summary at its end.

Three observers of the same runner: a live rich display on a terminal (step, elapsed, last
activity, tokens so far), plain timestamped lines when the output is not a terminal (logs of
an overnight run), and stream-json events when a dispatching parent reads the output.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from expeditor.executor import RunResult, Signal
from expeditor.executor.session import LiveSession
from expeditor.reports.humanize import format_duration as humanized_duration
from expeditor.runs.supervisor import Supervisor
from expeditor.state import StepExecution, StepStatus
from expeditor.usage import SessionUsage
from expeditor.usage.transcript import usage_from_transcript

__all__ = [
    "LinesProgress",
    "LiveProgress",
    "LiveView",
    "StreamJsonProgress",
    "SupervisorView",
    "format_duration",
    "summary_table",
    "summary_text",
    "tokens_of",
]


class LiveView(Protocol):
    """What the live table asks about a running session, by its id."""

    def last_activity(self, session_id: str) -> float | None:
        """Wall-clock time it last showed a sign of life (None: not started yet)."""
        ...

    def tokens_so_far(self, session_id: str) -> int:
        """Tokens its transcript records so far (the result event brings the true figures)."""
        ...


def tokens_of(usage: SessionUsage | None) -> int:
    """Every token a usage counted: uncached and cached input, and output."""
    return 0 if usage is None else usage.total.all_tokens


def format_duration(seconds: float) -> str:
    """The report's durations (``15m 40s``, ``3h 20m``), with tenths below a minute: steps are often quick."""
    return f"{max(seconds, 0.0):.1f}s" if seconds < 60 else humanized_duration(seconds)


def _duration(execution: StepExecution) -> float:
    if execution.started_at is None or execution.finished_at is None:
        return 0.0
    return execution.finished_at - execution.started_at


_STYLE = {
    StepStatus.SUCCESS: "green",
    StepStatus.FAILURE: "red",
    StepStatus.SKIPPED: "dim",
    StepStatus.CANCELLED: "yellow",
    StepStatus.INTERRUPTED: "yellow",
    StepStatus.RUNNING: "cyan",
}


class LinesProgress:
    """One timestamped line per event, for logs and pipes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tokens = 0

    def _line(self, text: str) -> None:
        self.out.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
        self.out.flush()

    def replayed(self, execution: StepExecution) -> None:
        self.tokens += tokens_of(execution.usage)
        self._line(
            f"step {execution.sequence} {execution.step}: {execution.status.value} (recorded earlier; not run again)"
        )

    def step_started(self, sequence: int, step: str, attempt: int, session_id: str, command: str) -> None:
        again = f", attempt {attempt}" if attempt > 1 else ""
        self._line(f"step {sequence} {step}: started{again} (session {session_id}): {command[:200]}")

    def step_finished(self, execution: StepExecution, result: RunResult | None) -> None:
        self.tokens += tokens_of(execution.usage)
        why = f": {execution.reason}" if execution.status is not StepStatus.SUCCESS and execution.reason else ""
        self._line(
            f"step {execution.sequence} {execution.step}: {execution.status.value} in "
            f"{format_duration(_duration(execution))}, {tokens_of(execution.usage):,} tokens "
            f"({self.tokens:,} so far){why}"
        )


class LiveProgress:
    """A live table on a terminal: every execution so far, the running one with its last activity."""

    def __init__(self, console: Console, view: LiveView) -> None:
        self.console = console
        self.view = view
        self.rows: list[StepExecution] = []
        self.current: tuple[int, str, int, str, float] | None = None
        self._last_seen: dict[str, tuple[float | None, int]] = {}
        self.live = Live(console=console, refresh_per_second=2, get_renderable=self._render, transient=True)

    def __enter__(self) -> LiveProgress:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def replayed(self, execution: StepExecution) -> None:
        self.rows.append(execution)
        self.console.print(
            Text.assemble(
                (f"{execution.status.value:>9} ", "dim"),
                f"{execution.sequence}. {execution.step} (recorded earlier; not run again)",
            )
        )
        self.live.refresh()

    def step_started(self, sequence: int, step: str, attempt: int, session_id: str, command: str) -> None:
        self.current = (sequence, step, attempt, session_id, time.time())

    def step_finished(self, execution: StepExecution, result: RunResult | None) -> None:
        self.current = None
        self.rows.append(execution)
        self.console.print(
            Text.assemble(
                (f"{execution.status.value:>9} ", _STYLE[execution.status]),
                f"{execution.sequence}. {execution.step} in {format_duration(_duration(execution))}, "
                f"{tokens_of(execution.usage):,} tokens",
            )
        )
        self.live.refresh()

    def _render(self) -> Table:
        table = Table(box=None, show_header=True, header_style="bold")
        for column in ("#", "step", "status", "elapsed", "last activity", "tokens so far"):
            table.add_column(column)
        so_far = sum(tokens_of(row.usage) for row in self.rows)
        if self.current is not None:
            sequence, step, attempt, session_id, started = self.current
            # Between the session's end and its step's record (the lines-changed snapshot runs
            # then) the supervisor no longer knows it: keep showing what was last seen.
            moved = self.view.last_activity(session_id) or self._last_seen.get(session_id, (None, 0))[0]
            running_tokens = self.view.tokens_so_far(session_id) or self._last_seen.get(session_id, (None, 0))[1]
            self._last_seen[session_id] = (moved, running_tokens)
            so_far += running_tokens
            quiet = f"{format_duration(time.time() - moved)} ago" if moved is not None else "starting"
            label = "running" if attempt == 1 else f"running (attempt {attempt})"
            table.add_row(
                str(sequence), step, Text(label, "cyan"), format_duration(time.time() - started), quiet, f"{so_far:,}"
            )
        else:
            table.add_row("", "", Text("between steps", "dim"), "", "", f"{so_far:,}")
        return table


class StreamJsonProgress:
    """stream-json events on stdout, for a dispatching parent: progress it ignores, then a result it reads."""

    def __init__(self, out: TextIO, session_id: str) -> None:
        self.out = out
        self.session_id = session_id

    def emit(self, event: dict[str, Any]) -> None:
        self.out.write(json.dumps({**event, "session_id": self.session_id}, separators=(",", ":")) + "\n")
        self.out.flush()

    def replayed(self, execution: StepExecution) -> None:
        self.emit({"type": "expeditor_step", "step": execution.step, "sequence": execution.sequence, "replayed": True})

    def step_started(self, sequence: int, step: str, attempt: int, session_id: str, command: str) -> None:
        self.emit({"type": "expeditor_step", "step": step, "sequence": sequence, "attempt": attempt, "run": session_id})

    def step_finished(self, execution: StepExecution, result: RunResult | None) -> None:
        self.emit(
            {
                "type": "expeditor_step",
                "step": execution.step,
                "sequence": execution.sequence,
                "status": execution.status.value,
            }
        )


def summary_table(executions: list[StepExecution], replayed: int) -> Table:
    """Each execution's status, attempts, duration and tokens, replayed ones marked."""
    table = Table(title="Pipeline summary", title_justify="left")
    for column in ("#", "step", "status", "attempts", "duration", "tokens", "note"):
        table.add_column(column, justify="right" if column in ("#", "attempts", "duration", "tokens") else "left")
    for index, execution in enumerate(executions):
        note = "recorded earlier; not run again" if index < replayed else (execution.reason or "")
        table.add_row(
            str(execution.sequence),
            execution.step,
            Text(execution.status.value, _STYLE[execution.status]),
            str(execution.attempts),
            format_duration(_duration(execution)),
            f"{tokens_of(execution.usage):,}",
            note if execution.status is not StepStatus.SUCCESS or index < replayed else "",
        )
    return table


def summary_text(executions: list[StepExecution], replayed: int) -> str:
    """The summary as plain lines (a dispatched pipeline's result text)."""
    lines = []
    for index, execution in enumerate(executions):
        replay = " (recorded earlier)" if index < replayed else ""
        captured = ", ".join(f"{k}={v}" for k, v in execution.captures.items())
        lines.append(
            f"{execution.sequence}. {execution.step}: {execution.status.value}{replay}"
            + (f" [{captured}]" if captured else "")
        )
    return "\n".join(lines)


class SupervisorView:
    """A supervisor's live runs as the live table sees them: their liveness clocks and transcripts."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        # Re-read a transcript only when it grew: a 40-minute step's file can be large.
        self._tokens: dict[str, tuple[int, int]] = {}

    def _session(self, session_id: str) -> LiveSession | None:
        live = self.supervisor.live.get(session_id)
        return live.control.session if live is not None else None

    def last_activity(self, session_id: str) -> float | None:
        session = self._session(session_id)
        if session is None:
            return None
        moved = session.clock.wall()
        times = [moved[signal] for signal in (Signal.STDOUT, Signal.TRANSCRIPT, Signal.STDERR) if signal in moved]
        return max(times, default=None)

    def tokens_so_far(self, session_id: str) -> int:
        session = self._session(session_id)
        if session is None or session.transcript_path is None:
            return 0
        try:
            size = session.transcript_path.stat().st_size
        except OSError:
            return 0
        known = self._tokens.get(session_id)
        if known is None or known[0] != size:
            usage = usage_from_transcript(session.transcript_path, session.transcript_offset)
            known = (size, tokens_of(usage))
            self._tokens[session_id] = known
        return known[1]
