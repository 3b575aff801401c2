"""Where the fake agent's output goes: stdout, the transcript file, stderr and the invocation log.

Every write reaches the file descriptor before the call returns, because the watchers under test read
stdout and the transcript live and judge a session by when they last moved. Transcript and log lines
are single ``write`` calls on ``O_APPEND`` descriptors, so concurrent agents sharing one invocation
log never interleave half lines.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["Channels", "InvocationLog", "now_iso", "to_json"]


def to_json(record: dict[str, Any]) -> str:
    """One compact JSON line's text, as Claude Code writes it (no spaces, non-ASCII kept)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def now_iso() -> str:
    """The timestamp format of Claude Code's transcript: UTC, milliseconds, ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class InvocationLog:
    """The JSON-lines log tests assert from (``EXPEDITOR_FAKE_LOG``); a no-op when no path is set."""

    def __init__(self, path: str | None) -> None:
        self._path = path

    def write(self, event: str, **fields: Any) -> None:
        """Append ``{"event": event, "pid": ..., **fields, "time": ...}`` as one line, in one write."""
        if not self._path:
            return
        record = {"event": event, "pid": os.getpid(), **fields, "time": time.time()}
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _write_all(fd, (to_json(record) + "\n").encode())
        finally:
            os.close(fd)


class Channels:
    """The agent's three outputs; the transcript file and its directory are created on first write."""

    def __init__(self, transcript: Path) -> None:
        self.transcript = transcript
        self._transcript_fd: int | None = None
        self._stdout_open = True

    def stdout(self, data: bytes) -> None:
        """Write bytes to stdout now; a reader that went away is not the agent's problem (nor Claude's)."""
        if not self._stdout_open:
            return
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            self._stdout_open = False

    def stdout_line(self, line: str | dict[str, Any]) -> None:
        text = line if isinstance(line, str) else to_json(line)
        self.stdout((text + "\n").encode())

    def transcript_line(self, line: str | dict[str, Any]) -> None:
        text = line if isinstance(line, str) else to_json(line)
        if self._transcript_fd is None:
            self.transcript.parent.mkdir(parents=True, exist_ok=True)
            self._transcript_fd = os.open(self.transcript, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        _write_all(self._transcript_fd, (text + "\n").encode())

    def stderr(self, text: str) -> None:
        sys.stderr.write(text if text.endswith("\n") else text + "\n")
        sys.stderr.flush()
