"""The recorded sessions of the usage golden test (tests/data/usage), read through expeditor's own parsers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from expeditor.executor.stream import StreamState
from expeditor.usage.models import SessionUsage
from expeditor.usage.stream_json import LineSplitter, decode_event
from expeditor.usage.transcript import usage_from_transcript

DATA = Path(__file__).resolve().parents[1] / "data" / "usage"


@dataclass(frozen=True)
class RecordedSession:
    """One launch as ``generate.py`` recorded it."""

    name: str
    step: str
    session_id: str
    model: str
    transcript_offset: int
    exit_code: int

    @property
    def stdout(self) -> Path:
        return DATA / f"{self.name}.stdout.jsonl"

    @property
    def transcript(self) -> Path:
        """The transcript as it was when this launch ended."""
        return DATA / f"{self.name}.transcript.jsonl"

    def stream(self) -> StreamState:
        """Its stdout, parsed as the runner parses it while the session runs."""
        state = StreamState()
        splitter = LineSplitter()
        for line in [*splitter.feed(self.stdout.read_bytes()), *splitter.flush()]:
            event = decode_event(line)
            if event is not None:
                state.handle(event)
        return state

    def usage(self) -> SessionUsage:
        """Its usage as the executor takes it: the result event, else the transcript from where it started."""
        result = self.stream().result
        if result is not None:
            return result.usage
        return usage_from_transcript(self.transcript, self.transcript_offset)


def recorded_sessions() -> dict[str, RecordedSession]:
    entries = json.loads((DATA / "sessions.json").read_text())
    return {entry["name"]: RecordedSession(**entry) for entry in entries}
