"""The contract suite's stores: every test here runs against SQLite (a temporary file) and PostgreSQL.

A store kind is a way to open a fresh, empty store (``StoreMaker``); the PostgreSQL one uses the module's
database from ``tests.support.postgres`` and empties its tables before each test, so tests share no record.
Test-sized leases: renewed every 0.5 s for 1.5 s.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from expeditor.state import CampaignStore, Owner, SqliteCampaignStore
from expeditor.state.postgres import PostgresCampaignStore
from tests.support.postgres import PostgresServer, pg_database_url, postgres_server

__all__ = [
    "LEASE_INTERVAL",
    "LEASE_TTL",
    "StoreMaker",
    "dead_owner",
    "make_store",
    "open_store_at",
    "store",
    "store_location",
]

LEASE_INTERVAL = 0.5
LEASE_TTL = 1.5
KINDS = ("sqlite", "postgres")

StoreMaker = Callable[..., CampaignStore]
"""Opens another store on the same data; keyword ``host_name`` (PostgreSQL only) names this host differently."""

# Re-exported so pytest finds the session and module fixtures in this directory.
_FIXTURES = (postgres_server, pg_database_url, PostgresServer)


@pytest.fixture(params=KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def store_location(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the test's empty store is: a SQLite file's path, or a PostgreSQL URL (its tables just emptied)."""
    if store_kind == "sqlite":
        return str(tmp_path / "state.sqlite3")
    url: str = request.getfixturevalue("pg_database_url")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "TRUNCATE expeditor.dispatches, expeditor.runs, expeditor.step_executions, expeditor.owners, "
            "expeditor.budgets"
        )
    return url


def open_store_at(kind: str, location: str, *, host_name: str | None = None, timeout: float = 5.0) -> CampaignStore:
    """A store of ``kind`` at ``location`` (also what a test's child process calls)."""
    if kind == "sqlite":
        return SqliteCampaignStore(Path(location), busy_timeout=timeout)
    return PostgresCampaignStore(
        location, timeout=timeout, host_name=host_name, lease_interval=LEASE_INTERVAL, lease_ttl=LEASE_TTL
    )


@pytest.fixture
def make_store(store_kind: str, store_location: str) -> Iterator[StoreMaker]:
    opened: list[CampaignStore] = []

    def maker(*, host_name: str | None = None, timeout: float = 5.0) -> CampaignStore:
        made = open_store_at(store_kind, store_location, host_name=host_name, timeout=timeout)
        opened.append(made)
        return made

    yield maker
    for made in opened:
        made.close()


@pytest.fixture
def store(make_store: StoreMaker) -> CampaignStore:
    return make_store()


@pytest.fixture
def dead_owner() -> Owner:
    """The owner identity of a real process on this host that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    start_time = psutil.Process(child.pid).create_time()
    assert child.stdin is not None
    child.stdin.close()
    child.wait(timeout=10)
    return Owner(pid=child.pid, start_time=start_time, host=Owner.current().host)
