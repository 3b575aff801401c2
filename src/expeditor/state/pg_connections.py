"""The PostgreSQL store's connections: a pool, one transaction per call, and what a failure says.

Connections come from a ``psycopg_pool.ConnectionPool`` and are checked before use, so a pool whose
server restarted reconnects without restarting expeditor. Each has ``statement_timeout`` and
``lock_timeout`` set to the store's timeout (the SQLite busy timeout's part) and its ``search_path``
set to the store's schema. The schema version is checked at first use (``pg_schema.ensure_current``):
a shared database is never migrated behind other hosts' backs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout
from pydantic import ValidationError

from expeditor.errors import InvalidInput, StoreUnavailable
from expeditor.state.pg_rows import PgConnection
from expeditor.state.pg_schema import ensure_current
from expeditor.state.store_url import redacted_url, scrubbed

__all__ = ["PgServer", "check_url", "first_line"]

T = TypeVar("T")

# The pool warns of every failed connection attempt, several per call and over two lines each; the
# store's own warning or error says it once, naming the server. The pool's errors still show.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


class PgServer:
    """One PostgreSQL database used through a pool; opened by the first transaction, not the constructor."""

    def __init__(self, url: str, *, schema: str, pool_size: int, timeout: float) -> None:
        check_url(url)
        self.server = redacted_url(url)
        self.timeout = timeout
        self._url = url
        milliseconds = max(1, round(timeout * 1000))
        self._connect_options: dict[str, Any] = {
            "connect_timeout": max(2, round(timeout)),  # libpq: whole seconds, and less than 2 means 2
            "options": f"-c search_path={schema} -c statement_timeout={milliseconds} -c lock_timeout={milliseconds}",
        }
        self._pool_size = pool_size
        self._pool = self._new_pool()
        self._lock = threading.Lock()
        self._opened = False
        self._closed = False
        self._schema = schema
        self._schema_checked = False

    def transaction(self, doing: str, work: Callable[[PgConnection], T], *, single_statement: bool = False) -> T:
        """Run ``work`` in one transaction, committed if it returns; a failure of the store is StoreUnavailable
        naming the server (an exception of ``work`` otherwise propagates unchanged, after the rollback).

        ``single_statement``: ``work`` runs one statement (a lookup), which is its own transaction.
        """
        try:
            return self._on_current_pool(doing, work, single_statement)
        except psycopg.Error as exc:
            raise self.unavailable(doing, scrubbed(first_line(exc), self._url)) from exc
        except ValidationError as exc:
            raise self.unavailable(doing, f"a record cannot be read: {exc}") from exc

    def _on_current_pool(self, doing: str, work: Callable[[PgConnection], T], single_statement: bool) -> T:
        pool = self._open(doing)
        try:
            with pool.connection() as connection:
                return self._run(connection, work, single_statement)
        except PoolClosed:
            # Another call replaced the pool while this one waited on it (below): the fresh one answers.
            # ``work`` never ran: a pool fails only callers still waiting for a connection.
            fresh = self._open(doing)
            if fresh is pool:
                raise
            with fresh.connection() as connection:
                return self._run(connection, work, single_statement)
        except PoolTimeout:
            # No pooled connection in time: the server is down, or back but the pool (which retries
            # with growing delays) has not noticed. Start a fresh pool, and answer this call on one
            # connection of its own when the server takes it; its refusal is what the caller is told.
            self._replace_pool(pool)
            with PgConnection.connect(
                self._url,
                row_factory=dict_row,
                autocommit=True,
                connect_timeout=self._connect_options["connect_timeout"],
                options=self._connect_options["options"],
            ) as own:
                return self._run(own, work, single_statement)

    def _run(self, connection: PgConnection, work: Callable[[PgConnection], T], single_statement: bool) -> T:
        if not self._schema_checked:
            self._check_schema(connection)
        if single_statement:  # autocommit: one statement is its own transaction, with no BEGIN/COMMIT trips
            return work(connection)
        with connection.transaction():
            return work(connection)

    def _check_schema(self, connection: PgConnection) -> None:
        positional = cast("psycopg.Connection[Any]", connection)
        positional.row_factory = tuple_row  # pg_schema reads rows by position
        try:
            ensure_current(positional, self._schema, store=self.server)
        finally:
            positional.row_factory = dict_row
        self._schema_checked = True

    def unavailable(self, doing: str, why: str) -> StoreUnavailable:
        return StoreUnavailable(f"{doing}: the campaign store {self.server} could not be used: {why}")

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.close()

    def _new_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        return ConnectionPool(
            self._url,
            kwargs={**self._connect_options, "row_factory": dict_row, "autocommit": True},
            min_size=1,
            max_size=self._pool_size,
            open=False,
            timeout=self.timeout,
            check=ConnectionPool.check_connection,
            name=f"expeditor store {self.server}",
        )

    def _replace_pool(self, failed: ConnectionPool[psycopg.Connection[Any]]) -> None:
        """Start over with a fresh pool: one that failed to connect retries with growing delays, so after the
        server comes back it could still make callers wait; a fresh one connects at once. Only the pool that
        failed is replaced: many callers timing out on it at once must not replace each other's fresh pools."""
        with self._lock:
            if self._closed or self._pool is not failed:
                return
            stale, self._pool = self._pool, self._new_pool()
            self._opened = False
        # Its workers may be in a connection attempt: let them end in the background. Connections in use
        # are closed as they come back.
        threading.Thread(target=stale.close, kwargs={"timeout": 10}, name="expeditor-stale-pool", daemon=True).start()

    def _open(self, doing: str) -> ConnectionPool[psycopg.Connection[Any]]:
        if self._opened and not self._closed:
            return self._pool
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"{doing}: the campaign store {self.server} is closed")
            if not self._opened:
                self._pool.open(wait=False)
                self._opened = True
            pool = self._pool
        return pool


def check_url(url: str) -> None:
    """Refuse (InvalidInput) a URL libpq cannot parse, before a pool worker logs libpq's complaint: that
    quotes the unparsable part, which may be the password."""
    try:
        conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise InvalidInput(
            f"store_url {redacted_url(url)} cannot be read: {scrubbed(first_line(exc), url)}; expected "
            "postgresql://user@host:port/db, with reserved characters percent-encoded"
        ) from exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
