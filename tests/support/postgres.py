"""A real PostgreSQL server for the tests: a throwaway cluster, or the one ``EXPEDITOR_TEST_DATABASE_URL`` names.

The throwaway cluster is made with the installed binaries (``EXPEDITOR_TEST_PG_BINDIR``, else ``PATH``,
else Debian's newest ``/usr/lib/postgresql/<version>/bin``) in a private temporary directory, listening
on 127.0.0.1 at a free port with its socket inside that directory, durability off (fsync,
synchronous_commit, full_page_writes: a crash loses a throwaway). ``initdb`` refuses root, so as root
every server command runs as the ``postgres`` user through ``runuser``. Connections over TCP need a
password (scram-sha-256): the tests' role ``expeditor`` has a random one, so a wrong password is a real
refusal. The server's processes do not carry the leak guard's tag, and a watchdog process stops the
cluster when this test process dies however it dies (Ctrl-C, SIGKILL), so no ``postgres`` outlives it.

Each test module gets a fresh database copied from one migrated template (``CREATE DATABASE … TEMPLATE``).
PostgreSQL missing: the tests that need it skip with the reason, and fail under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import psutil
import psycopg
import pytest
from psycopg import sql

from expeditor.state.pg_schema import migrate

__all__ = [
    "STORE_SCHEMA",
    "PostgresCluster",
    "PostgresServer",
    "find_pg_bindir",
    "pg_database_url",
    "postgres_server",
    "private_postgres_server",
]

STORE_SCHEMA = "expeditor"
TEST_ROLE = "expeditor"
_MISSING = (
    "PostgreSQL not found: install it (Debian: apt-get install postgresql), set EXPEDITOR_TEST_PG_BINDIR to the "
    "directory holding initdb and pg_ctl, or EXPEDITOR_TEST_DATABASE_URL to a server"
)
_DEBIAN_ROOT = Path("/usr/lib/postgresql")
_START_ATTEMPTS = 3
_COMMAND_TIMEOUT = 60.0

# Runs beside the tests: waits for its stdin to close (this process ended, however), stops the cluster and
# removes its directory (argv[1]; a cluster's data is over 100 MB, and nothing else removes it after a SIGKILL).
_WATCHDOG = """
import shutil, subprocess, sys
sys.stdin.buffer.read()
subprocess.run(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
shutil.rmtree(sys.argv[1], ignore_errors=True)
"""


def find_pg_bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: ``EXPEDITOR_TEST_PG_BINDIR``, ``PATH``, Debian's newest version."""
    named = os.environ.get("EXPEDITOR_TEST_PG_BINDIR")
    if named:
        return Path(named) if (Path(named) / "initdb").is_file() else None
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    versions = sorted(
        (int(child.name), child / "bin")
        for child in (_DEBIAN_ROOT.iterdir() if _DEBIAN_ROOT.is_dir() else ())
        if child.name.isdigit() and (child / "bin" / "initdb").is_file()
    )
    return versions[-1][1] if versions else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _untagged_environment() -> dict[str, str]:
    """Our environment minus the leak guard's tag and libpq's variables: the cluster is the session's, not a test's."""
    return {
        name: value
        for name, value in os.environ.items()
        if name != "EXPEDITOR_TEST_TAG" and not name.startswith("PG") and not name.startswith("EXPEDITOR_")
    }


class PostgresCluster:
    """A throwaway PostgreSQL cluster in a temporary directory: ``start()``, ``stop()``, ``destroy()``."""

    def __init__(self, bindir: Path, *, password: str) -> None:
        self.bindir = bindir
        self.password = password
        self.port = 0
        self._as_postgres = os.geteuid() == 0
        self.directory = Path(tempfile.mkdtemp(prefix="expeditor-pg-"))
        self.data = self.directory / "data"
        self.socket_dir = self.directory / "socket"
        self.log = self.directory / "server.log"
        self._watchdog: subprocess.Popen[bytes] | None = None
        self.initdb_seconds = 0.0
        self.start_seconds = 0.0

    def _prefix(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if self._as_postgres else []

    def _ctl(self, *argv: str) -> list[str]:
        """A ``pg_ctl`` command line for this cluster, as the user that runs it."""
        return [*self._prefix(), str(self.bindir / "pg_ctl"), "-D", str(self.data), *argv]

    def _run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            argv,
            env=_untagged_environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT,
            cwd=self.directory,
            check=False,
        )
        if check and completed.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({completed.returncode}): {completed.stderr.strip()}")
        return completed

    def initialize(self) -> None:
        """``initdb`` the cluster: trust over the socket, scram-sha-256 over TCP, superuser ``postgres``."""
        self.socket_dir.mkdir()
        if self._as_postgres:
            shutil.chown(self.directory, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        password_file = self.directory / "superuser-password"
        password_file.write_text(self.password + "\n", encoding="utf-8")
        if self._as_postgres:
            shutil.chown(password_file, "postgres", "postgres")
        began = time.monotonic()
        try:
            self._run(
                [
                    *self._prefix(),
                    str(self.bindir / "initdb"),
                    "--no-sync",
                    "--username=postgres",
                    f"--pwfile={password_file}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "-D",
                    str(self.data),
                ]
            )
        finally:
            password_file.unlink()
        self.initdb_seconds = time.monotonic() - began
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "300",
            "shared_buffers": "32MB",
        }
        configuration = "".join(f"{name} = {value}\n" for name, value in settings.items())
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(configuration)
        self._watch()

    def _watch(self) -> None:
        """Start the watchdog that stops the cluster when this process ends (before anything can be left)."""
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self.directory), *self._ctl("stop", "-m", "immediate")],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_untagged_environment(),
            start_new_session=True,  # a Ctrl-C for the tests is not one for the watchdog
        )

    def start(self) -> None:
        """``pg_ctl start -w`` on the port it had (a free one the first time)."""
        failure = ""
        for _ in range(_START_ATTEMPTS):
            if not self.port:
                self.port = _free_port()
            began = time.monotonic()
            started = self._run(
                self._ctl(
                    "-l", str(self.log), "-o", f"-p {self.port}", "-w", "-t", str(int(_COMMAND_TIMEOUT)), "start"
                ),
                check=False,
            )
            if started.returncode == 0:
                self.start_seconds = time.monotonic() - began
                return
            failure = started.stderr.strip() or started.stdout.strip()
            if self.log.is_file() and "could not bind" in self.log.read_text(errors="replace"):
                self.port = 0  # taken since we chose it: choose again
                continue
            break
        raise RuntimeError(f"pg_ctl start failed: {failure}; see {self.log}")

    def stop(self) -> None:
        """``pg_ctl stop -m immediate``: every server process ends at once, as on a crash."""
        self._run(self._ctl("stop", "-m", "immediate"))

    def running(self) -> bool:
        return self._run(self._ctl("status"), check=False).returncode == 0

    def processes(self) -> list[psutil.Process]:
        """The postmaster and its children, while it runs."""
        try:
            postmaster = psutil.Process(int((self.data / "postmaster.pid").read_text().splitlines()[0]))
            return [postmaster, *postmaster.children(recursive=True)]
        except (OSError, ValueError, IndexError, psutil.Error):
            return []

    def destroy(self) -> None:
        """Stop the server if it runs, end the watchdog, remove the directory."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            if self.running():
                self.stop()
        if self._watchdog is not None:
            assert self._watchdog.stdin is not None
            self._watchdog.stdin.close()
            try:
                self._watchdog.wait(timeout=_COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class PostgresServer:
    """The session's server: an admin URL, the tests' role and password, and (own cluster only) stop/start."""

    admin_url: str
    user: str
    password: str
    host: str
    port: int
    cluster: PostgresCluster | None = None
    template: str = ""
    _counter: list[int] = field(default_factory=lambda: [0])

    def url(self, database: str, *, user: str | None = None, password: str | None = None) -> str:
        """A URL for ``database`` as the tests' role (or ``user``), with its password (or ``password``)."""
        who = quote(user or self.user, safe="")
        secret = self.password if password is None else password
        credentials = f"{who}:{quote(secret, safe='')}" if secret else who
        return f"postgresql://{credentials}@{self.host}:{self.port}/{quote(database, safe='')}"

    def stop(self) -> None:
        """Stop the server mid-test (``pg_ctl stop -m immediate``); only for the throwaway cluster."""
        if self.cluster is None:
            pytest.skip("cannot stop a server named by EXPEDITOR_TEST_DATABASE_URL")
        self.cluster.stop()

    def start(self) -> None:
        """Start it again on the same port."""
        if self.cluster is None:
            pytest.skip("cannot start a server named by EXPEDITOR_TEST_DATABASE_URL")
        self.cluster.start()

    def create_database(self, prefix: str = "test") -> str:
        """A new database copied from the migrated template; returns its name."""
        self._counter[0] += 1
        name = f"{_identifier(prefix)}_{os.getpid()}_{self._counter[0]}_{secrets.token_hex(3)}"
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(self.template), sql.Identifier(self.user)
                )
            )
        return name

    def create_empty_database(self, prefix: str = "empty") -> str:
        """A new database with no expeditor schema in it (for the migration tests)."""
        self._counter[0] += 1
        name = f"{_identifier(prefix)}_{os.getpid()}_{self._counter[0]}_{secrets.token_hex(3)}"
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(self.user))
            )
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _identifier(text: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", text.lower())[:30] or "db"


def _prepare_template(server: PostgresServer) -> None:
    """Create the tests' role (own cluster) and the migrated template every module's database copies."""
    with psycopg.connect(server.admin_url, autocommit=True) as admin:
        if server.cluster is not None:
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(server.user), sql.Literal(server.password)
                )
            )
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(server.template), sql.Identifier(server.user))
        )
    with psycopg.connect(server.url(server.template)) as connection:
        migrate(connection, STORE_SCHEMA)


def _external_server(url: str) -> PostgresServer:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise pytest.UsageError(
            f"EXPEDITOR_TEST_DATABASE_URL must be postgresql://user:password@host:port/db, not {url!r}"
        )
    return PostgresServer(
        admin_url=url,
        user=parts.username or "postgres",
        password=parts.password or "",
        host=parts.hostname,
        port=parts.port or 5432,
    )


def _missing() -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(_MISSING)
    pytest.skip(_MISSING)


def _throwaway_server(bindir: Path) -> PostgresServer:
    """A new cluster, started, as a server whose ``cluster`` the caller destroys."""
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.fail("running as root, the tests need runuser to start PostgreSQL as the postgres user")
    cluster = PostgresCluster(bindir, password=secrets.token_urlsafe(18))
    try:
        cluster.initialize()
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    return PostgresServer(
        admin_url=f"postgresql://postgres:{quote(cluster.password, safe='')}@127.0.0.1:{cluster.port}/postgres",
        user=TEST_ROLE,
        password=secrets.token_urlsafe(18),
        host="127.0.0.1",
        port=cluster.port,
        cluster=cluster,
    )


@pytest.fixture
def private_postgres_server() -> Iterator[PostgresServer]:
    """A server of this test's own, with a migrated template, for a test that stops it (``stop()``, ``start()``):
    the session's server is shared, and stopping it would fail every other test. Costs an ``initdb`` (1–2 s)."""
    if os.environ.get("EXPEDITOR_TEST_DATABASE_URL"):
        pytest.skip("a test that stops the server needs a throwaway cluster, not EXPEDITOR_TEST_DATABASE_URL")
    bindir = find_pg_bindir()
    if bindir is None:
        _missing()
        raise AssertionError("unreachable")
    server = _throwaway_server(bindir)
    assert server.cluster is not None
    try:
        server.template = f"expeditor_template_{os.getpid()}_{secrets.token_hex(3)}"
        _prepare_template(server)
        yield server
    finally:
        server.cluster.destroy()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server with a migrated template; stopped and removed at the end of the session."""
    external = os.environ.get("EXPEDITOR_TEST_DATABASE_URL")
    cluster: PostgresCluster | None = None
    if external:
        server = _external_server(external)
    else:
        bindir = find_pg_bindir()
        if bindir is None:
            _missing()
            raise AssertionError("unreachable")
        server = _throwaway_server(bindir)
        cluster = server.cluster
    server.template = f"expeditor_template_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        _prepare_template(server)
        yield server
    finally:
        if cluster is not None:
            cluster.destroy()
        else:
            with contextlib.suppress(psycopg.Error):
                server.drop_database(server.template)


@pytest.fixture(scope="module")
def pg_database_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, migrated database for this test module, as a URL with the tests' role and password."""
    name = postgres_server.create_database(request.module.__name__.rpartition(".")[2])
    yield postgres_server.url(name)
    if postgres_server.cluster is None:  # a throwaway cluster goes whole; a shared server keeps nothing of ours
        with contextlib.suppress(psycopg.Error):
            postgres_server.drop_database(name)
