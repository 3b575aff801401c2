"""Transcripts checkpointed into the PostgreSQL store and restored on another host (issue 27, item 8)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from expeditor.claude_paths import transcript_path
from expeditor.queue.transcripts import Checkpointer, StoredTranscripts, TranscriptKeeping, restore_transcript
from expeditor.state.pg_connections import PgServer
from tests.support.postgres import STORE_SCHEMA

SESSION = "2f1c7a50-0000-4000-8000-000000000001"


@pytest.fixture
def stored(pg_database_url: str) -> Iterator[tuple[StoredTranscripts, StoredTranscripts]]:
    """The store's transcripts as host a and as host b write them; emptied afterwards."""
    servers = [PgServer(pg_database_url, schema=STORE_SCHEMA, pool_size=2, timeout=5) for _ in range(2)]
    a, b = StoredTranscripts(servers[0], host="host-a"), StoredTranscripts(servers[1], host="host-b")
    try:
        yield a, b
    finally:
        servers[0].transaction("emptying", lambda c: c.execute("DELETE FROM transcripts"))
        a.close()
        b.close()


def lines(*numbers: int) -> bytes:
    return b"".join(b'{"type":"user","n":%d,"pad":"%s"}\n' % (n, b"x" * 200) for n in numbers)


def test_only_whole_lines_are_stored_and_each_checkpoint_appends_what_is_new(
    stored: tuple[StoredTranscripts, StoredTranscripts], tmp_path: Path
) -> None:
    a, _ = stored
    path = tmp_path / "a.jsonl"
    path.write_bytes(lines(1, 2) + b'{"type":"assis')
    checkpointer = Checkpointer(a, path, SESSION, max_bytes=1 << 20)

    first = checkpointer.checkpoint()
    with path.open("ab") as file:
        file.write(b'tant"}\n' + lines(3))
    second = checkpointer.checkpoint()
    nothing_new = checkpointer.checkpoint()

    assert first == len(lines(1, 2))
    assert second == len(path.read_bytes()) - first
    assert nothing_new == 0
    assert a.read(SESSION) == (path.read_bytes(), "host-a")
    assert a.stored_length(SESSION) == path.stat().st_size


def test_another_host_restores_the_stored_copy_at_its_own_cwd_and_continues_it(
    stored: tuple[StoredTranscripts, StoredTranscripts], tmp_path: Path
) -> None:
    a, b = stored
    first_host = tmp_path / "a.jsonl"
    first_host.write_bytes(lines(1, 2, 3))
    stale = Checkpointer(a, first_host, SESSION, max_bytes=1 << 20)
    stale.checkpoint()
    config_b, cwd_b = tmp_path / "claude-b", tmp_path / "checkout-b"

    source = restore_transcript(b, config_b, cwd_b, SESSION)

    restored = transcript_path(config_b, cwd_b, SESSION)
    assert source.available
    assert "the store" in source.describe()
    assert "host-a" in source.describe()
    assert restored.read_bytes() == lines(1, 2, 3)
    # The resumed session appends on host b, whose worker now copies it on.
    with restored.open("ab") as file:
        file.write(lines(4))
    assert Checkpointer(b, restored, SESSION, max_bytes=1 << 20).checkpoint() == len(lines(4))
    # Host a's worker, which lost the job, cannot splice its own bytes in: it stops copying.
    with first_host.open("ab") as file:
        file.write(lines(9))
    assert stale.checkpoint() == 0
    assert stale.stopped is not None
    assert "another host" in stale.stopped
    assert b.read(SESSION) == (lines(1, 2, 3, 4), "host-b")


def test_a_local_copy_holding_the_stored_one_is_kept_and_a_stale_one_is_replaced(
    stored: tuple[StoredTranscripts, StoredTranscripts], tmp_path: Path
) -> None:
    a, _ = stored
    config, cwd = tmp_path / "claude", tmp_path / "checkout"
    local = transcript_path(config, cwd, SESSION)
    local.parent.mkdir(parents=True)
    source_file = tmp_path / "source.jsonl"
    source_file.write_bytes(lines(1, 2))
    Checkpointer(a, source_file, SESSION, max_bytes=1 << 20).checkpoint()

    local.write_bytes(lines(1, 2, 3))  # this host ran it further than the store has
    kept = restore_transcript(a, config, cwd, SESSION)
    local.write_bytes(lines(1))  # this host's copy is older than the store's
    replaced = restore_transcript(a, config, cwd, SESSION)

    assert kept.available
    assert "this host's transcript" in kept.describe()
    assert replaced.available
    assert "the store" in replaced.describe()
    assert local.read_bytes() == lines(1, 2)


def test_with_no_transcript_anywhere_the_attempt_starts_fresh_and_says_why(
    stored: tuple[StoredTranscripts, StoredTranscripts], tmp_path: Path
) -> None:
    a, _ = stored

    source = restore_transcript(a, tmp_path / "claude", tmp_path / "checkout", SESSION)

    assert not source.available
    assert f"no transcript of session {SESSION}" in source.describe()
    assert not transcript_path(tmp_path / "claude", tmp_path / "checkout", SESSION).exists()


def test_copying_stops_at_the_size_limit_and_says_so(
    stored: tuple[StoredTranscripts, StoredTranscripts], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = stored
    path = tmp_path / "big.jsonl"
    path.write_bytes(lines(*range(10)))
    limit = len(lines(1)) * 3 + 10
    checkpointer = Checkpointer(a, path, SESSION, max_bytes=limit)

    stored_now = checkpointer.checkpoint()
    with path.open("ab") as file:
        file.write(lines(10))
    later = checkpointer.checkpoint()

    assert stored_now == len(lines(1)) * 3
    assert later == 0
    assert checkpointer.stopped is not None
    assert "transcript_checkpoint_max_bytes" in checkpointer.stopped
    assert "no longer copied into the store" in caplog.text
    assert a.read(SESSION)[0] == lines(0, 1, 2)


@pytest.mark.anyio
async def test_a_transcript_is_copied_while_its_run_goes_on_and_once_more_as_it_ends(
    stored: tuple[StoredTranscripts, StoredTranscripts], tmp_path: Path
) -> None:
    a, _ = stored
    keeping = TranscriptKeeping(a, tmp_path / "claude", interval=0.05, max_bytes=1 << 20)
    cwd = tmp_path / "checkout"
    path = transcript_path(tmp_path / "claude", cwd, SESSION)
    path.parent.mkdir(parents=True)

    async with keeping.checkpointing(SESSION, cwd):
        path.write_bytes(lines(1))
        with anyio.fail_after(5):
            while a.stored_length(SESSION) == 0:  # a checkpoint while the block runs
                await anyio.sleep(0.02)
        with path.open("ab") as file:
            file.write(lines(2, 3))  # written just before the run ends

    assert a.read(SESSION)[0] == lines(1, 2, 3)
