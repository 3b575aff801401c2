"""Draining a session's stdout and stderr while it runs: stream-json parsed as it arrives, a stderr tail kept."""

from __future__ import annotations

from typing import Protocol

import anyio
import anyio.abc

from expeditor.executor.control import Decision
from expeditor.executor.models import Signal
from expeditor.executor.session import SignalClock
from expeditor.executor.stream import StreamState
from expeditor.usage.stream_json import LineSplitter, decode_event

__all__ = ["Observed", "SessionPipes"]

_READ_SIZE = 65536
_STDERR_TAIL_BYTES = 8192
_STDOUT_TAIL_BYTES = 64 * 1024


class Observed(Protocol):
    """What the pipes tell about a session as its output arrives (a ``LiveSession``)."""

    stdout_bytes: int
    clock: SignalClock


class SessionPipes:
    """Drains stdout (parsing stream-json) and stderr (keeping a tail) into the session."""

    def __init__(
        self, process: anyio.abc.Process, session: Observed, decision: Decision, *, keep_stdout: bool = False
    ) -> None:
        self.process = process
        self.keep_stdout = keep_stdout
        self.stdout = bytearray()
        self.session = session
        self.decision = decision
        self.state = StreamState()
        self.splitter = LineSplitter()
        self.result_seen = anyio.Event()
        self.stdout_eof = anyio.Event()
        self.stderr_eof = anyio.Event()
        self.stderr = bytearray()

    async def pump_stdout(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while not self.stdout_eof.is_set():
            try:
                chunk = await stream.receive(_READ_SIZE)
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                if not self.keep_stdout:
                    for line in self.splitter.flush():
                        self._line(line)
                self.stdout_eof.set()
                return
            self.session.stdout_bytes += len(chunk)
            self.session.clock.moved(Signal.STDOUT)
            if self.keep_stdout:
                # A plain command's output is text, not events: a line that looks like a result
                # event (it ran `claude -p` itself, or printed a log) must not end the run.
                self.stdout += chunk
                if len(self.stdout) > 2 * _STDOUT_TAIL_BYTES:
                    del self.stdout[: len(self.stdout) - _STDOUT_TAIL_BYTES]
                continue
            for line in self.splitter.feed(chunk):
                self._line(line)

    def _line(self, line: bytes) -> None:
        event = decode_event(line)
        if event is None:
            return
        self.state.handle(event)
        if self.state.result is not None:
            self.result_seen.set()

    async def pump_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        while not self.stderr_eof.is_set():
            try:
                chunk = await stream.receive(_READ_SIZE)
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                self.stderr_eof.set()
                return
            self.session.clock.moved(Signal.STDERR)
            self.stderr += chunk
            if len(self.stderr) > 2 * _STDERR_TAIL_BYTES:
                del self.stderr[: len(self.stderr) - _STDERR_TAIL_BYTES]

    def stdout_tail(self) -> str:
        """The end of a plain command's output (kept only with ``keep_stdout``)."""
        return bytes(self.stdout[-_STDOUT_TAIL_BYTES:]).decode("utf-8", errors="replace").strip()

    def stderr_tail(self) -> str:
        return bytes(self.stderr[-_STDERR_TAIL_BYTES:]).decode("utf-8", errors="replace").strip()
