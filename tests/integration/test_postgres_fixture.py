"""The tests' PostgreSQL server itself: it can be stopped and started mid-test, it wants the right password,
and a test process that dies, however it dies, leaves no ``postgres`` process behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from expeditor.state.pg_schema import SCHEMA_VERSION, schema_version
from tests.conftest import TEST_TAG_VARIABLE
from tests.support.postgres import STORE_SCHEMA, PostgresServer, find_pg_bindir

REPOSITORY = Path(__file__).resolve().parents[2]

# A test process that starts a cluster, says where it is, then waits to be killed.
_DRIVER = """
import json, secrets, sys
from tests.support.postgres import PostgresCluster, find_pg_bindir
cluster = PostgresCluster(find_pg_bindir(), password=secrets.token_hex(8))
cluster.initialize()
cluster.start()
pids = [process.pid for process in cluster.processes()]
print(json.dumps({"pids": pids, "port": cluster.port, "password": cluster.password,
                  "directory": str(cluster.directory)}), flush=True)
sys.stdin.read()
"""


def test_each_module_gets_a_migrated_database_of_its_own(pg_database_url: str, postgres_server: PostgresServer) -> None:
    with psycopg.connect(pg_database_url) as connection:
        assert schema_version(connection, STORE_SCHEMA) == SCHEMA_VERSION
        name = connection.execute("SELECT current_database()").fetchone()
    assert name is not None
    assert name[0] != postgres_server.template


def test_a_wrong_password_is_refused(postgres_server: PostgresServer, pg_database_url: str) -> None:
    database = pg_database_url.rpartition("/")[2]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres_server.url(database, password="wrong")).close()


def test_the_server_stops_and_starts_again_on_the_same_port_mid_test(
    postgres_server: PostgresServer, pg_database_url: str
) -> None:
    if postgres_server.cluster is None:
        pytest.skip("EXPEDITOR_TEST_DATABASE_URL names a server these tests do not control")
    processes = postgres_server.cluster.processes()
    assert processes, "the cluster runs"
    postgres_server.stop()
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert alive == [], "pg_ctl stop -m immediate leaves no server process"
    with pytest.raises(psycopg.OperationalError, match="Connection refused"):
        psycopg.connect(pg_database_url, connect_timeout=2).close()
    postgres_server.start()
    with psycopg.connect(pg_database_url) as connection:
        assert schema_version(connection, STORE_SCHEMA) == SCHEMA_VERSION


def test_a_test_process_killed_outright_leaves_no_postgres_process(tmp_path: Path) -> None:
    if find_pg_bindir() is None:
        pytest.skip("PostgreSQL not found")
    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER],
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    directory: Path | None = None
    try:
        assert driver.stdout is not None
        started = json.loads(driver.stdout.readline())
        directory = Path(started["directory"])
        servers = [psutil.Process(pid) for pid in started["pids"]]
        assert servers
        for server in servers:  # the leak guard's tag is the tests', not the session-long server's
            try:
                environment = server.environ()
            except psutil.AccessDenied:  # another user's process: the leak guard cannot read it either
                continue
            assert TEST_TAG_VARIABLE not in environment
        url = f"postgresql://postgres:{started['password']}@127.0.0.1:{started['port']}/postgres"
        with psycopg.connect(url) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)

        driver.send_signal(signal.SIGKILL)  # no finally, no atexit: only the watchdog is left to act
        driver.wait(timeout=10)
        _, alive = psutil.wait_procs(servers, timeout=30)
        assert alive == [], f"left running: {alive}"
        deadline = time.monotonic() + 30  # the watchdog removes the directory once the server is stopped
        while directory.exists():
            assert time.monotonic() < deadline, f"left on disk: {directory}"
            time.sleep(0.05)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.communicate()  # waits, and closes its pipes
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


_USES_THE_SERVER = f"""
import psycopg

def test_uses_the_server(pg_database_url):
    with psycopg.connect(pg_database_url) as connection:
        assert connection.execute("SELECT count(*) FROM expeditor.schema_version").fetchone() == ({SCHEMA_VERSION},)
"""


def run_pytest_on(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """pytest in a process of its own, with only the PostgreSQL fixtures, on a test that needs the server."""
    test_file = tmp_path / "test_needs_postgres.py"
    test_file.write_text(_USES_THE_SERVER)
    environment = {
        **{name: value for name, value in os.environ.items() if not name.startswith(("EXPEDITOR_TEST_", "CI"))},
        TEST_TAG_VARIABLE: os.environ[TEST_TAG_VARIABLE],
        "PYTHONPATH": str(REPOSITORY),
        **env,
    }
    plugins = ["-p", "no:cacheprovider", "-p", "tests.support.postgres"]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            *plugins,
            "--rootdir",
            str(tmp_path),
            "-c",
            os.devnull,
            str(test_file),
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_postgresql_the_tests_skip_with_the_reason_and_fail_under_ci(tmp_path: Path) -> None:
    missing = {"EXPEDITOR_TEST_PG_BINDIR": str(tmp_path / "no-postgresql-here")}
    skipped = run_pytest_on(tmp_path, **missing)
    assert skipped.returncode == 0, skipped.stdout
    assert "1 skipped" in skipped.stdout
    assert "PostgreSQL not found" in skipped.stdout
    failed = run_pytest_on(tmp_path, CI="true", **missing)
    assert failed.returncode == 1, failed.stdout
    assert "PostgreSQL not found" in failed.stdout


def test_a_server_named_by_url_is_used_and_left_as_found(tmp_path: Path, postgres_server: PostgresServer) -> None:
    def databases() -> set[str]:
        with psycopg.connect(postgres_server.admin_url) as connection:
            return {row[0] for row in connection.execute("SELECT datname FROM pg_database").fetchall()}

    before = databases()
    done = run_pytest_on(tmp_path, EXPEDITOR_TEST_DATABASE_URL=postgres_server.admin_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert databases() == before  # its template and its module's database were dropped
