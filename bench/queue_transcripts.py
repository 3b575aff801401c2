"""A long session's transcript in the store: its stored size and what each checkpoint costs.

The transcript is made of the recorded real sessions' transcript lines (tests/data/usage) and, between
them, tool results carrying this repository's source files (a long session reads and edits files; the
recorded ones alone are 32 lines that would repeat and compress far better than a real session), until it
reaches ``--megabytes``; it grows by ``--step-kilobytes`` between checkpoints, as a session writes
between two ``transcript_checkpoint_interval`` ticks, and each checkpoint is the worker's own
(``queue.transcripts.Checkpointer``: read the new whole lines, compress, append under the session's lock).
Reported: raw and stored bytes, the compression ratio, each checkpoint's time, and restoring the whole copy.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path

import psycopg
from tests.support.postgres import STORE_SCHEMA

from bench._common import temp_root
from bench._queue import queue_database, summary
from expeditor.queue.transcripts import Checkpointer, StoredTranscripts
from expeditor.state.pg_connections import PgServer

REPOSITORY = Path(__file__).resolve().parents[1]
RECORDED = REPOSITORY / "tests" / "data" / "usage"
SESSION = "b3e1c2d4-0000-4000-8000-00000000be9c"


def session_lines() -> list[bytes]:
    """Recorded lines, each followed by a tool result holding one source file of this repository."""
    recorded: list[bytes] = []
    for path in sorted(RECORDED.glob("*.transcript.jsonl")):
        recorded += [line + b"\n" for line in path.read_bytes().splitlines() if line.strip()]
    if not recorded:
        raise SystemExit(f"no recorded transcripts in {RECORDED}")
    sources = sorted((REPOSITORY / "src").rglob("*.py")) + sorted((REPOSITORY / "tests").rglob("*.py"))
    lines: list[bytes] = []
    for number, source in enumerate(sources):
        result = {
            "type": "user",
            "uuid": str(uuid.UUID(int=number)),
            "message": {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": f"toolu_{number:08d}", "content": source.read_text()}
                ],
            },
        }
        lines += [recorded[number % len(recorded)], json.dumps(result).encode() + b"\n"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=float, default=32.0, help="the session's final transcript size")
    parser.add_argument("--step-kilobytes", type=float, default=256.0, help="growth between two checkpoints")
    args = parser.parse_args()
    lines = session_lines()
    final, step = int(args.megabytes * 1024 * 1024), int(args.step_kilobytes * 1024)
    with queue_database() as database, temp_root() as tmp:
        path = Path(tmp) / "session.jsonl"
        server = PgServer(database.url, schema=STORE_SCHEMA, pool_size=2, timeout=30)
        stored = StoredTranscripts(server, host="bench-host")
        checkpointer = Checkpointer(stored, path, SESSION, max_bytes=64 * 1024 * 1024)
        costs: list[float] = []
        written, index = 0, 0
        try:
            with path.open("ab") as transcript:
                while written < final:
                    goal = min(final, written + step)
                    while written < goal:
                        line = lines[index % len(lines)]
                        transcript.write(line)
                        written += len(line)
                        index += 1
                    transcript.flush()
                    began = time.perf_counter()
                    checkpointer.checkpoint()
                    costs.append(time.perf_counter() - began)
            began = time.perf_counter()
            copy, _ = stored.read(SESSION)
            restore = time.perf_counter() - began
        finally:
            stored.close()
        with psycopg.connect(database.url) as connection:
            row = connection.execute(
                f"SELECT sum(length(data)), count(*) FROM {STORE_SCHEMA}.transcripts WHERE session_id = %s", (SESSION,)
            ).fetchone()
        assert row is not None
        assert copy == path.read_bytes(), "the stored copy differs from the file"
        packed, pieces = int(row[0]), int(row[1])
        print(f"transcript: {written / 1e6:.1f} MB raw in {index} lines; {pieces} checkpoints of ~{step // 1024} KB")
        print(f"stored: {packed / 1e6:.2f} MB compressed ({written / packed:.1f}x)")
        print(summary(f"checkpoint of {step // 1024} KB", costs))
        print(f"all checkpoints: {sum(costs):.2f} s; reading the whole copy back: {restore * 1000:.0f} ms")


if __name__ == "__main__":
    main()
