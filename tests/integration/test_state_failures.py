"""A corrupt, locked or unwritable store: lookups fail open, claims are refused clearly, nothing is lost."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from expeditor.errors import ClaimRefused, StoreUnavailable
from expeditor.state import ClaimAction, DispatchStatus, Owner, SqliteCampaignStore

ME = Owner.current()
BUSY = 0.3

# Holds the store's write lock until its stdin closes. "exclusive" also stops readers
# (locking_mode EXCLUSIVE gives up WAL's shared memory); plain BEGIN EXCLUSIVE in WAL does not.
LOCKER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
if sys.argv[2] == "exclusive":
    connection.execute("PRAGMA locking_mode = EXCLUSIVE")
connection.execute("BEGIN EXCLUSIVE")
connection.execute("UPDATE dispatches SET updated_at = updated_at")
print("locked", flush=True)
sys.stdin.read()
connection.execute("ROLLBACK")
connection.close()
"""


def claim(store: SqliteCampaignStore, name: str = "job") -> ClaimAction:
    return store.claim("camp", name, recipe="impl", inputs={}, caller_session_id=None, owner=ME).action


def succeed(store: SqliteCampaignStore, name: str = "job") -> None:
    assert claim(store, name) is ClaimAction.LAUNCH
    store.mark_running("camp", name, attempt=1, dispatched_session_id=f"{name}-session")
    store.mark_succeeded("camp", name, attempt=1, summary="merged")


@contextlib.contextmanager
def hold_lock(path: Path, mode: str) -> Generator[None, None, None]:
    """Another process holds the store's write lock (``mode``: "wal" or "exclusive") inside the block."""
    command = [sys.executable, "-c", LOCKER, str(path), mode]
    locker = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert locker.stdin is not None
    assert locker.stdout is not None
    try:
        assert locker.stdout.readline().strip() == "locked"
        yield
    finally:
        locker.stdin.close()
        locker.wait(timeout=10)
        locker.stdout.close()


@pytest.fixture
def locked(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A store with one success, locked by another process in the mode the test is parametrised with."""
    path = tmp_path / "state.sqlite3"
    store = SqliteCampaignStore(path)
    succeed(store)
    store.close()
    with hold_lock(path, request.param):
        yield path


def test_a_corrupt_store_is_moved_aside_kept_and_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.sqlite3"
    garbage = os.urandom(16384)
    path.write_bytes(garbage)
    store = SqliteCampaignStore(path, busy_timeout=BUSY)
    with caplog.at_level(logging.WARNING):
        assert store.find_completed_dispatch("camp", "job") is None
    assert "is corrupt" in caplog.text
    assert "moved it aside" in caplog.text
    kept = list(tmp_path.glob("state.sqlite3.corrupt-*"))
    assert [moved.read_bytes() for moved in kept] == [garbage]
    succeed(store)
    assert store.find_completed_dispatch("camp", "job") is not None
    store.close()


def test_a_store_damaged_after_use_is_moved_aside_on_next_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.sqlite3"
    store = SqliteCampaignStore(path, busy_timeout=BUSY)
    succeed(store)
    store.close()
    with path.open("r+b") as damaged:  # keep the 100-byte header, wreck the schema page and the rest
        damaged.seek(100)
        damaged.write(os.urandom(path.stat().st_size - 100))
    reopened = SqliteCampaignStore(path, busy_timeout=BUSY)
    with caplog.at_level(logging.WARNING):
        assert reopened.find_completed_dispatch("camp", "job") is None
    assert "moved it aside" in caplog.text
    assert claim(reopened) is ClaimAction.LAUNCH
    reopened.close()


def test_corruption_found_while_in_use_fails_open_then_the_store_is_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.sqlite3"
    store = SqliteCampaignStore(path, busy_timeout=BUSY, max_idle_connections=0)  # no page cache survives a call
    succeed(store)
    page_size = 4096
    with path.open("r+b") as damaged:  # page 1 (the schema) intact, every table and index page wrecked
        damaged.seek(page_size)
        damaged.write(os.urandom(path.stat().st_size - page_size))
    with caplog.at_level(logging.WARNING):
        assert store.find_completed_dispatch("camp", "job") is None
    assert "it will be moved aside and a fresh store started on the next call" in caplog.text
    assert claim(store, "other") is ClaimAction.LAUNCH
    assert "moved it aside" in caplog.text
    assert len(list(tmp_path.glob("state.sqlite3.corrupt-*"))) == 1
    store.close()


@pytest.mark.parametrize("locked", ["exclusive"], indirect=True)
def test_a_store_locked_against_readers_fails_lookups_open_and_refuses_claims(
    locked: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteCampaignStore(locked, busy_timeout=BUSY)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert store.find_completed_dispatch("camp", "job") is None
    assert time.monotonic() - started < BUSY + 1
    assert "held its lock for longer than the 0.3 s busy timeout" in caplog.text
    assert "answering as if nothing were recorded" in caplog.text
    with pytest.raises(ClaimRefused) as refused:
        claim(store, "other")
    assert "held its lock" in str(refused.value)
    assert "nothing was launched: retry the dispatch" in str(refused.value)
    assert isinstance(refused.value, StoreUnavailable)
    store.close()


@pytest.mark.parametrize("locked", ["wal"], indirect=True)
def test_a_store_locked_by_a_writer_still_answers_lookups_and_refuses_claims(locked: Path) -> None:
    store = SqliteCampaignStore(locked, busy_timeout=BUSY)
    done = store.find_completed_dispatch("camp", "job")
    assert done is not None
    assert done.status is DispatchStatus.SUCCESS
    started = time.monotonic()
    with pytest.raises(ClaimRefused, match="held its lock"):
        claim(store, "other")
    assert time.monotonic() - started < BUSY + 1
    store.close()


def test_claims_work_again_once_the_lock_is_released(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    first = SqliteCampaignStore(path, busy_timeout=BUSY)
    succeed(first)
    first.close()  # a process in exclusive locking mode must be the only one with the file open
    store = SqliteCampaignStore(path, busy_timeout=BUSY)
    with hold_lock(path, "exclusive"), pytest.raises(ClaimRefused):
        claim(store, "other")
    assert claim(store, "other") is ClaimAction.LAUNCH
    assert store.find_completed_dispatch("camp", "job") is not None
    store.close()


def test_a_home_that_cannot_be_created_refuses_claims_clearly(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    store = SqliteCampaignStore(blocker / "home" / "state.sqlite3", busy_timeout=BUSY)
    assert store.find_completed_dispatch("camp", "job") is None
    with pytest.raises(ClaimRefused) as refused:
        claim(store)
    message = str(refused.value)
    assert f"cannot create the campaign store under {blocker / 'home'}" in message
    assert "make expeditor's home a writable directory" in message
    store.close()


def test_a_store_path_that_cannot_be_opened_fails_lookups_open_and_refuses_claims(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.sqlite3"
    path.mkdir()
    store = SqliteCampaignStore(path, busy_timeout=BUSY)
    with caplog.at_level(logging.WARNING):
        assert store.list("camp") == []
    assert "unable to open database file" in caplog.text
    with pytest.raises(ClaimRefused, match="is a writable directory"):
        claim(store)
    store.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_a_read_only_home_refuses_claims_clearly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o500)
    store = SqliteCampaignStore(home / "state.sqlite3", busy_timeout=BUSY)
    try:
        with pytest.raises(ClaimRefused, match=r"Permission denied|readonly|unable to open"):
            claim(store)
    finally:
        store.close()
        home.chmod(0o700)


def test_a_store_moved_aside_by_another_process_is_followed_not_written_behind(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    server = SqliteCampaignStore(path, busy_timeout=BUSY)
    succeed(server)  # the server now holds pooled connections to this file
    for suffix in ("", "-wal", "-shm"):
        moved = path.with_name(path.name + suffix)
        if moved.exists():
            moved.rename(tmp_path / f"aside{suffix}")
    other = SqliteCampaignStore(path, busy_timeout=BUSY)
    assert claim(other, "from-other") is ClaimAction.LAUNCH
    assert claim(server, "from-server") is ClaimAction.LAUNCH
    assert [record.name for record in other.list("camp")] == ["from-other", "from-server"]
    assert server.find_completed_dispatch("camp", "job") is None
    other.close()
    server.close()
