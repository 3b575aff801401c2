"""``expeditor db migrate`` against a real PostgreSQL server, run as real processes; and what a bad store URL says."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from expeditor.state.pg_schema import MIGRATION_LOCK_CLASS, SCHEMA_VERSION, schema_version
from tests.support.postgres import STORE_SCHEMA, PostgresServer

# The CLI's processes would take the tests' own store settings from the environment otherwise.
_CLEAN_ENV = {name: value for name, value in os.environ.items() if not name.startswith(("EXPEDITOR_STORE", "PG"))}


def expeditor(tmp_path: Path, *args: str, store_url: str | None, **env: str) -> subprocess.Popen[str]:
    """Start the CLI with ``store_url`` (None: unset), returning the running process."""
    environment = {**_CLEAN_ENV, "PGPASSFILE": str(tmp_path / "no-such-passfile"), **env}
    if store_url is not None:
        environment["EXPEDITOR_STORE_URL"] = store_url
    return subprocess.Popen(
        [sys.executable, "-m", "expeditor", "--home", str(tmp_path / "home"), *args],
        env=environment,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(tmp_path: Path, *args: str, store_url: str | None, **env: str) -> tuple[int, str, str]:
    process = expeditor(tmp_path, *args, store_url=store_url, **env)
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def versions(url: str) -> list[int]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(f"SELECT version FROM {STORE_SCHEMA}.schema_version ORDER BY version").fetchall()
    return [row[0] for row in rows]


@pytest.fixture
def empty_url(postgres_server: PostgresServer) -> str:
    """A database with no expeditor schema in it."""
    return postgres_server.url(postgres_server.create_empty_database())


def test_migrate_on_an_empty_database_prints_the_versions_then_does_nothing_the_second_time(
    tmp_path: Path, empty_url: str, postgres_server: PostgresServer
) -> None:
    code, out, err = run(tmp_path, "db", "migrate", store_url=empty_url)
    assert (code, err) == (0, "")
    assert f"version 0 -> {SCHEMA_VERSION}" in out
    assert postgres_server.password not in out
    assert versions(empty_url) == list(range(1, SCHEMA_VERSION + 1))

    code, out, err = run(tmp_path, "db", "migrate", store_url=empty_url)
    assert (code, err) == (0, "")
    assert f"version {SCHEMA_VERSION}, current: nothing to apply" in out
    assert versions(empty_url) == list(range(1, SCHEMA_VERSION + 1))


def test_three_processes_migrating_at_once_apply_each_migration_once(tmp_path: Path, empty_url: str) -> None:
    # The migration lock is held here until all three wait for it, so they do run at once (each starts
    # an interpreter first, which on a busy machine could otherwise leave them one after another).
    with psycopg.connect(empty_url) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (MIGRATION_LOCK_CLASS, STORE_SCHEMA))
        processes = [expeditor(tmp_path, "db", "migrate", store_url=empty_url) for _ in range(3)]
        waiting, deadline = 0, time.monotonic() + 60
        while waiting < 3:
            assert time.monotonic() < deadline, f"{waiting} of 3 migrations waited for the lock"
            assert all(process.poll() is None for process in processes), "a migration ended without the lock"
            time.sleep(0.05)
            with psycopg.connect(empty_url) as looker:
                row = looker.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = %s",
                    (MIGRATION_LOCK_CLASS,),
                ).fetchone()
            waiting = 0 if row is None else int(row[0])
    results = [(process.wait(timeout=60), *process.communicate()) for process in processes]
    assert [code for code, _, _ in results] == [0, 0, 0], results
    outputs = sorted(out for _, out, _ in results)
    # One found nothing and applied everything; the others waited for it, then found the schema current.
    assert sum(f"version 0 -> {SCHEMA_VERSION}" in out for out in outputs) == 1, outputs
    assert sum(f"version {SCHEMA_VERSION}, current: nothing to apply" in out for out in outputs) == 2, outputs
    # The job queue's half likewise: applied once, found current twice.
    assert sum("job queue of procrastinate none ->" in out for out in outputs) == 1, outputs
    assert versions(empty_url) == list(range(1, SCHEMA_VERSION + 1))


def test_a_schema_newer_than_this_expeditor_is_refused_by_migrate_and_by_the_store(
    tmp_path: Path, empty_url: str
) -> None:
    assert run(tmp_path, "db", "migrate", store_url=empty_url)[0] == 0
    newer = SCHEMA_VERSION + 1
    with psycopg.connect(empty_url) as connection:
        connection.execute(f"INSERT INTO {STORE_SCHEMA}.schema_version VALUES (%s, 0)", (newer,))

    code, out, err = run(tmp_path, "db", "migrate", store_url=empty_url)
    assert code != 0
    assert out == ""
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert f"schema version {newer}, newer than the {SCHEMA_VERSION}" in err
    assert "upgrade expeditor on this host" in err
    assert versions(empty_url) == [*range(1, SCHEMA_VERSION + 1), newer]  # nothing changed

    # A command that uses the store refuses it the same way, naming what to do.
    code, _, err = run(tmp_path, "status", "--campaign", "c", store_url=empty_url)
    assert "upgrade expeditor on this host" in err, err


def test_an_unmigrated_database_is_refused_by_the_store_with_the_command_to_run(tmp_path: Path, empty_url: str) -> None:
    from expeditor.config import load_settings
    from expeditor.errors import StoreUnavailable
    from expeditor.state import open_store

    settings = load_settings(home=tmp_path / "home", store_url=empty_url)
    store = open_store(settings)
    try:
        with pytest.raises(StoreUnavailable, match=r"run `expeditor db migrate`"):
            store.mark_running("c", "j", attempt=1, dispatched_session_id="s")
    finally:
        store.close()
    with psycopg.connect(empty_url) as connection:
        assert schema_version(connection, STORE_SCHEMA) == 0  # the store migrated nothing behind anyone's back


def test_bad_store_urls_each_give_one_specific_line_and_no_traceback(
    tmp_path: Path, postgres_server: PostgresServer, pg_database_url: str
) -> None:
    database = pg_database_url.rpartition("/")[2]
    cases = {
        "unknown scheme": (
            f"mysql://expeditor:{postgres_server.password}@127.0.0.1/x",
            "expected postgresql:// or postgres://",
        ),
        "unreachable host": (
            postgres_server.url(database).replace(f":{postgres_server.port}/", f":{_closed_port()}/"),
            "Connection refused",
        ),
        "wrong password": (
            postgres_server.url(database, password="not-the-password"),
            'password authentication failed for user "expeditor"',
        ),
        "missing database": (postgres_server.url("no_such_database"), 'database "no_such_database" does not exist'),
        # libpq quotes the token it cannot decode: here the password itself.
        "unparsable password": (
            postgres_server.url(database).replace("@", "%zz@", 1),
            'invalid percent-encoded token: "***"',
        ),
    }
    for case, (url, expected) in cases.items():
        code, out, err = run(tmp_path, "db", "migrate", store_url=url)
        assert code != 0, case
        assert out == "", case
        assert err.startswith("expeditor: "), (case, err)
        assert err.count("\n") == 1, (case, err)
        assert expected in err, (case, err)
        assert "Traceback" not in err, case
        for secret in (postgres_server.password, "not-the-password"):
            assert secret not in err, case
        if case != "unknown scheme":
            assert "expeditor@127.0.0.1:" in err, (case, err)  # the server, as user@host:port/db


def test_a_postgresql_url_without_psycopg_is_refused_with_the_install_command(tmp_path: Path) -> None:
    # psycopg made unimportable for this one process, the way a missing extra is.
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['psycopg'] = None\n")
    code, _, err = run(
        tmp_path, "db", "migrate", store_url="postgresql://u:secret@127.0.0.1/db", PYTHONPATH=str(blocker)
    )
    assert code != 0
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert "pip install 'expeditor[postgres]'" in err
    assert "secret" not in err
    assert "u@127.0.0.1:5432/db" in err


def test_migrate_without_a_store_url_says_sqlite_needs_none(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, "db", "migrate", store_url=None)
    assert (code, err) == (0, "")
    assert "SQLite" in out
    assert "nothing to do" in out


def _closed_port() -> int:
    """A port nothing listens on: bound, then released (the kernel hands it out again only much later)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
