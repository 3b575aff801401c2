"""The SQLite file behind the store: opening, pooling, migrating, recovering, translating errors.

Threads: connections are pooled. Each call takes an idle connection (or opens a new one) for
its whole duration and gives it back, so two threads never use one connection at once and
any number of worker threads may call the store concurrently; at most ``max_idle`` idle
connections stay open. Between processes and threads alike, SQLite's own locks serialise
writers: every write is one ``BEGIN IMMEDIATE`` transaction, which waits up to the busy
timeout for the write lock. Readers never wait for writers (WAL).

Recovery: a file that is not a database, or fails ``PRAGMA quick_check`` after corruption
was seen, is renamed ``<name>.corrupt-<UTC timestamp>`` (with its ``-wal``/``-shm``), kept,
and a fresh store is created in its place. This happens under an exclusive ``flock`` on
``<name>.lock`` and only after checking again under it, so two processes never move aside
a fresh store the other just created. Every call checks (one ``stat``) that the name still
refers to the file its connections were opened on; when another process moved it aside,
the pool is dropped and the new file opened, so no write lands in a file nobody consults.

Read-only: a file this process may not write, or in a directory it may not write (a read-only
home), cannot be prepared (lock file, WAL, migrations) but is still read through a read-only
connection, so lookups answer; every write fails as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import IO, TypeVar

from pydantic import ValidationError

from expeditor.errors import StoreUnavailable
from expeditor.homes import create_private_file, make_private_dir
from expeditor.state.schema import SCHEMA_VERSION, migrate, schema_version

__all__ = ["SqliteFile"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_ACCESS_CODES = frozenset(
    {sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL}
)
_COMPANIONS = ("", "-wal", "-shm")


class _Corrupt(Exception):
    """The file is not a healthy SQLite database."""


class SqliteFile:
    """One SQLite database file, shared safely by the threads of this process and by other processes."""

    def __init__(self, path: Path, *, busy_timeout: float, max_idle: int = 8) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._max_idle = max_idle
        self._lock = threading.Lock()  # guards the pool and the flags below
        self._init_lock = threading.Lock()  # one thread opens the file at a time
        self._identity: tuple[int, int] | None = None
        self._idle: list[tuple[int, sqlite3.Connection]] = []
        self._generation = 0
        self._ready = False
        self._corruption_seen = False
        self._closed = False
        self._read_only_logged = False

    @property
    def opened(self) -> bool:
        """Whether the file has been created, checked and migrated by this process."""
        return self._ready

    # --- the two ways in -----------------------------------------------------------------

    def read(self, doing: str, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``query`` outside any explicit transaction; raise StoreUnavailable if it cannot.

        A file this process may not write (a read-only home) cannot be prepared for use, yet it is
        still read, through a read-only connection: finished work must be found without a write.
        """
        try:
            self._ensure_ready(doing)
        except StoreUnavailable as exc:
            if not self._read_only():
                raise
            return self._read_only_query(doing, query, exc)
        with self._connection(doing) as connection:
            return query(connection)

    def write(self, doing: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction, committed if it returns.

        An exception from ``work`` rolls the transaction back and propagates unchanged
        (sqlite3 errors become StoreUnavailable).
        """
        with self._connection(doing) as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = work(connection)
                connection.execute("COMMIT")
            except BaseException:
                _roll_back(connection)
                raise
            return result

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for _, connection in idle:
            connection.close()

    # --- connections -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self, doing: str) -> Generator[sqlite3.Connection, None, None]:
        generation, connection = self._take(doing)
        healthy = True
        try:
            yield connection
        except sqlite3.Error as exc:
            healthy = False
            raise self._translate(exc, doing) from exc
        except (ValidationError, json.JSONDecodeError) as exc:
            raise StoreUnavailable(
                f"{doing}: a record in the campaign store {self.path} cannot be read: {exc}"
            ) from exc
        finally:
            self._give_back(generation, connection, healthy=healthy and not connection.in_transaction)

    def _take(self, doing: str) -> tuple[int, sqlite3.Connection]:
        self._ensure_ready(doing)
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"{doing}: the campaign store {self.path} is closed")
            if self._idle:
                return self._idle.pop()
            generation = self._generation
        try:
            return generation, self._open()
        except sqlite3.Error as exc:
            raise self._translate(exc, doing) from exc

    def _ensure_ready(self, doing: str) -> None:
        """Open the file once, and again whenever it was found corrupt or replaced on disk."""
        if self._ready and self._same_file():
            return
        if not self._init_lock.acquire(timeout=self.busy_timeout):
            raise StoreUnavailable(
                f"{doing}: the campaign store {self.path} has been opening for longer than "
                f"the {self.busy_timeout:g} s busy timeout"
            )
        try:
            if self._ready and self._same_file():
                return
            if self._ready:  # moved aside or replaced by another process: drop connections to the old file
                self._forget_connections(corrupt=False)
            self._initialize(doing)
        finally:
            self._init_lock.release()

    def _same_file(self) -> bool:
        try:
            return _identity(self.path) == self._identity
        except OSError:
            return False

    def _give_back(self, generation: int, connection: sqlite3.Connection, *, healthy: bool) -> None:
        with self._lock:
            keep = healthy and not self._closed and generation == self._generation and len(self._idle) < self._max_idle
            if keep:
                self._idle.append((generation, connection))
        if not keep:
            connection.close()

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        connection.row_factory = sqlite3.Row
        try:
            # FULL: a committed transition survives a power cut, not only a crash; writes are rare.
            connection.execute("PRAGMA synchronous = FULL")
        except BaseException:
            connection.close()
            raise
        return connection

    def _read_only(self) -> bool:
        """Whether the file exists but neither it nor its directory may be written by this process."""
        try:
            exists = self.path.is_file()
        except OSError:
            return False
        return exists and not (os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK))

    def _read_only_query(self, doing: str, query: Callable[[sqlite3.Connection], T], cause: StoreUnavailable) -> T:
        if not self._read_only_logged:
            self._read_only_logged = True
            logger.warning("%s; reading it read-only: lookups are answered, nothing can be recorded", cause)
        uri = self.path.absolute().as_uri()
        failure: Exception | None = None
        # A WAL file needs its -shm beside it even to be read; where that cannot be created, the file
        # is read as immutable: nothing writes it through a read-only home meanwhile.
        for options in ("mode=ro", "mode=ro&immutable=1"):
            try:
                connection = sqlite3.connect(f"{uri}?{options}", uri=True, timeout=self.busy_timeout)
            except sqlite3.Error as exc:
                failure = exc
                continue
            try:
                connection.row_factory = sqlite3.Row
                return query(connection)
            except (sqlite3.Error, ValidationError, json.JSONDecodeError) as exc:
                failure = exc
            finally:
                connection.close()
        raise StoreUnavailable(f"{cause}; reading it read-only failed too: {failure}") from failure

    # --- errors ----------------------------------------------------------------------------

    def _translate(self, exc: sqlite3.Error, doing: str) -> StoreUnavailable:
        code = _primary_code(exc)
        if code in _BUSY_CODES:
            why = f"another process has held its lock for longer than the {self.busy_timeout:g} s busy timeout"
        elif code in _CORRUPT_CODES:
            self._forget_connections(corrupt=True)
            why = f"it is corrupt ({exc}); it will be moved aside and a fresh store started on the next call"
        elif code in _ACCESS_CODES:
            why = f"{exc}; check that {self.path.parent} is a writable directory with free space"
        else:
            why = str(exc)
        return StoreUnavailable(f"{doing}: the campaign store {self.path} could not be used: {why}")

    def _forget_connections(self, *, corrupt: bool) -> None:
        with self._lock:
            self._generation += 1
            self._ready = False
            self._corruption_seen = self._corruption_seen or corrupt
            idle, self._idle = self._idle, []
        for _, connection in idle:
            connection.close()

    # --- opening, migrating, recovering ------------------------------------------------------

    def _initialize(self, doing: str) -> None:
        """Create, check and migrate the file; called with ``self._init_lock`` held."""
        try:
            make_private_dir(self.path.parent)
            lock_path = self.path.with_name(self.path.name + ".lock")
            create_private_file(lock_path)
            lock = open(lock_path, "a")  # noqa: SIM115 - held across the block
        except OSError as exc:
            raise StoreUnavailable(
                f"{doing}: cannot create the campaign store under {self.path.parent}: {exc.strerror or exc}; "
                "make expeditor's home a writable directory"
            ) from exc
        with lock:
            self._flock(lock, doing)
            try:
                self._prepare(doing, verify=self._corruption_seen)
            except _Corrupt as exc:
                moved = self._move_aside()
                logger.warning(
                    "the campaign store %s is corrupt (%s): moved it aside to %s (kept, not deleted) "
                    "and started a fresh store; records in the old file are no longer consulted",
                    self.path,
                    exc,
                    moved,
                )
                try:
                    self._prepare(doing, verify=False)
                except _Corrupt as again:
                    raise StoreUnavailable(
                        f"{doing}: a fresh campaign store at {self.path} is corrupt: {again}"
                    ) from again
            try:
                identity = _identity(self.path)
            except OSError as exc:
                raise StoreUnavailable(f"{doing}: the campaign store {self.path} vanished: {exc}") from exc
        with self._lock:
            self._identity = identity
            self._corruption_seen = False
            self._ready = True

    def _flock(self, lock: IO[str], doing: str) -> None:
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreUnavailable(
                        f"{doing}: another process has been opening the campaign store {self.path} "
                        f"for longer than the {self.busy_timeout:g} s busy timeout"
                    ) from None
                time.sleep(0.005)
            except OSError as exc:
                raise StoreUnavailable(f"{doing}: cannot lock {self.path}: {exc.strerror or exc}") from exc

    def _prepare(self, doing: str, *, verify: bool) -> None:
        """Open the file, switch it to WAL, optionally check it, apply migrations."""
        # Created 0600 before SQLite opens it: SQLite gives the -wal and -shm files the database's mode.
        # Where it cannot be created, opening it below says why.
        with contextlib.suppress(OSError):
            create_private_file(self.path)
        try:
            connection = self._open()
        except sqlite3.Error as exc:
            raise self._translate_open(exc, doing) from exc
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode = WAL")
            if verify:
                verdict = [row[0] for row in connection.execute("PRAGMA quick_check")]
                if verdict != ["ok"]:
                    raise _Corrupt("; ".join(str(line) for line in verdict[:3]))
            if schema_version(connection) != SCHEMA_VERSION:  # migrate() refuses a newer one
                connection.execute("BEGIN IMMEDIATE")
                try:
                    migrate(connection)
                    connection.execute("COMMIT")
                except BaseException:
                    _roll_back(connection)
                    raise
        except sqlite3.Error as exc:
            raise self._translate_open(exc, doing) from exc
        finally:
            connection.close()

    def _translate_open(self, exc: sqlite3.Error, doing: str) -> Exception:
        if _primary_code(exc) in _CORRUPT_CODES:
            return _Corrupt(str(exc))
        return self._translate(exc, doing)

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        counter = 1
        while any(target.with_name(target.name + suffix).exists() for suffix in _COMPANIONS):
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}.{counter}")
            counter += 1
        for suffix in _COMPANIONS:
            source = self.path.with_name(self.path.name + suffix)
            try:
                source.rename(target.with_name(target.name + suffix))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreUnavailable(
                    f"the campaign store {self.path} is corrupt and cannot be moved aside: {exc.strerror or exc}"
                ) from exc
        return target


def _identity(path: Path) -> tuple[int, int]:
    """What tells one file from another that replaced it under the same name."""
    status = os.stat(path)
    return status.st_dev, status.st_ino


def _primary_code(exc: sqlite3.Error) -> int | None:
    code: int | None = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _roll_back(connection: sqlite3.Connection) -> None:
    """Roll back an open transaction; a failure here leaves the connection unhealthy, not the error lost."""
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
