"""Hosts for the queue tests: real ``expeditor worker`` processes on one PostgreSQL database, with short clocks.

Each worker plays a separate host: its own ``--host-name``, home and Claude config directory; they share the
checkout (``tmp_path``, the one allowed root, as the same checkout path on every host) and the fake agent's
invocation log, so a test counts launches across all hosts from one file. Every clock is short: leases renewed
every 0.5 s and expired after 1.5 s (the stall threshold), the stall check every 0.5 s.

The fixtures are registered for every test directory (``tests/conftest.py``). ``queue_database_url`` is a fresh
database per test module with the queue's schema applied as ``expeditor db migrate`` applies it; ``queue_hosts``
starts workers (``hosts.start("a")``), runs other expeditor commands as one of the hosts would
(``hosts.expeditor("dispatch", …, host="a")``) and stops every worker it started at the end.

procrastinate missing: the tests skip with the reason, and fail under ``CI=true`` (as PostgreSQL missing does).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg.rows import dict_row

from expeditor.testing import read_invocation_log
from tests.support.fake import FAKE_AGENT_COMMAND
from tests.support.postgres import STORE_SCHEMA, PostgresServer

__all__ = [
    "QUEUE_TIMINGS",
    "QueueHosts",
    "Worker",
    "queue_database_url",
    "queue_hosts",
    "require_procrastinate",
]

_MISSING = "procrastinate is not installed: pip install 'expeditor[queue]'"

# The settings every host of a queue test shares: short clocks, so a test waits fractions of a second.
QUEUE_TIMINGS: dict[str, str] = {
    "EXPEDITOR_LEASE_INTERVAL": "0.5",
    "EXPEDITOR_LEASE_TTL": "1.5",
    "EXPEDITOR_STALL_CHECK_INTERVAL": "0.5",
    "EXPEDITOR_KILL_GRACE": "0.5",
    "EXPEDITOR_RESULT_EXIT_GRACE": "0.3",
    "EXPEDITOR_POLL_INTERVAL": "0.05",
    "EXPEDITOR_CHILDREN_INTERVAL": "0.2",
    "EXPEDITOR_MARKER_HEARTBEAT_INTERVAL": "0.1",
    "EXPEDITOR_MARKER_FRESHNESS": "2",
    "EXPEDITOR_STALE_THRESHOLD": "60",
    "EXPEDITOR_PROGRESS_INTERVAL": "0.5",
    "EXPEDITOR_STORE_TIMEOUT": "3",
    # A running orchestrator's transcript reaches the store within a fifth of a second (resume across hosts).
    "EXPEDITOR_TRANSCRIPT_CHECKPOINT_INTERVAL": "0.2",
}

_READY = "ready:"  # the line a worker logs once it fetches jobs
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0


def require_procrastinate() -> None:
    """Skip (fail under CI) when procrastinate cannot be imported."""
    if importlib.util.find_spec("procrastinate") is not None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(_MISSING)
    pytest.skip(_MISSING)


@pytest.fixture(scope="module")
def queue_database_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for this module, migrated with the queue's schema as ``expeditor db migrate`` does."""
    require_procrastinate()
    from expeditor.queue.schema import migrate_queue

    name = postgres_server.create_database(request.module.__name__.rpartition(".")[2])
    url = postgres_server.url(name)
    with psycopg.connect(url) as connection:
        migrate_queue(connection, STORE_SCHEMA)
    yield url
    if postgres_server.cluster is None:
        with contextlib.suppress(psycopg.Error):
            postgres_server.drop_database(name)


@dataclass
class Worker:
    """One ``expeditor worker`` process: a host of its own."""

    host: str
    home: Path
    claude_dir: Path
    log: Path
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    process: subprocess.Popen[bytes] = field(init=False)

    def start(self) -> Worker:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group, as a service manager would start it
            )
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def wait_for_line(self, needle: str, *, timeout: float = _START_TIMEOUT, after: int = 0) -> str:
        """Wait until the worker's log (from byte ``after``) holds ``needle``; returns the log. Fails if it exits."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()[after:]
            if needle in text:
                return text
            if self.process.poll() is not None:
                pytest.fail(f"worker {self.host} exited ({self.process.returncode}) before {needle!r}:\n{text}")
            if time.monotonic() > deadline:
                pytest.fail(f"worker {self.host}: no {needle!r} within {timeout} s:\n{text}")
            time.sleep(0.02)

    def wait_ready(self, *, timeout: float = _START_TIMEOUT) -> Worker:
        self.wait_for_line(_READY, timeout=timeout)
        return self

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def kill_group(self) -> None:
        """SIGKILL the worker's whole process group, as a host that dies would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=_STOP_TIMEOUT)

    def stop(self) -> int:
        """SIGTERM and wait for it to exit; its exit status."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill_group()
        return self.process.returncode


@dataclass
class QueueHosts:
    """The workers of one test, and how to run expeditor as any of its hosts."""

    url: str
    root: Path
    workers: list[Worker] = field(default_factory=list)

    @property
    def agent_log(self) -> Path:
        """The fake agent's invocation log, shared by every host."""
        return self.root / "agent.log"

    def launches(self, session_id: str | None = None) -> list[dict[str, Any]]:
        """The fake agent's launches on every host (of ``session_id`` only, when given)."""
        if not self.agent_log.exists():
            return []
        return [
            entry
            for entry in read_invocation_log(self.agent_log)
            if entry.get("event") == "launch" and session_id in (None, entry.get("session_id"))
        ]

    def home(self, host: str) -> Path:
        return self.root / "hosts" / host / "home"

    def claude_dir(self, host: str) -> Path:
        return self.root / "hosts" / host / "claude"

    def env(self, host: str, **settings: str) -> dict[str, str]:
        """The environment of an expeditor process on ``host``: this database, queue mode, short clocks."""
        inherited = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
        return {
            **inherited,
            **QUEUE_TIMINGS,
            "EXPEDITOR_HOME": str(self.home(host)),
            "EXPEDITOR_CLAUDE_CONFIG_DIR": str(self.claude_dir(host)),
            "EXPEDITOR_CLAUDE_COMMAND": FAKE_AGENT_COMMAND,
            "EXPEDITOR_ALLOWED_ROOTS": str(self.root),
            "EXPEDITOR_FAKE_LOG": str(self.agent_log),
            "EXPEDITOR_STORE_URL": self.url,
            "EXPEDITOR_DISPATCH_MODE": "queue",
            "EXPEDITOR_HOST_NAME": host,
            **settings,
        }

    def start(
        self, host: str, *, slots: int = 2, wait: bool = True, extra: Mapping[str, str] | None = None, **settings: str
    ) -> Worker:
        """Start ``expeditor worker --host-name HOST --slots N`` (``extra``, ``settings``: EXPEDITOR_ variables)."""
        argv = [sys.executable, "-m", "expeditor", "worker", "--host-name", host, "--slots", str(slots)]
        worker = Worker(
            host=host,
            home=self.home(host),
            claude_dir=self.claude_dir(host),
            log=self.root / "hosts" / host / f"worker-{len(self.workers)}.log",
            argv=argv,
            env=self.env(host, **{**(extra or {}), **settings}),
            cwd=self.root,
        ).start()
        self.workers.append(worker)
        return worker.wait_ready() if wait else worker

    def restart(self, worker: Worker) -> Worker:
        """The same host's worker again (same home, config directory and settings)."""
        again = Worker(
            host=worker.host,
            home=worker.home,
            claude_dir=worker.claude_dir,
            log=self.root / "hosts" / worker.host / f"worker-{len(self.workers)}.log",
            argv=worker.argv,
            env=worker.env,
            cwd=worker.cwd,
        ).start()
        self.workers.append(again)
        return again.wait_ready()

    def expeditor_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "expeditor", *args]

    def expeditor(
        self,
        *args: str,
        host: str = "dispatcher",
        timeout: float = 60,
        extra: Mapping[str, str] | None = None,
        **settings: str,
    ) -> subprocess.CompletedProcess[str]:
        """Run one expeditor command as a process on ``host`` (``extra``, ``settings``: more EXPEDITOR_ variables)."""
        return subprocess.run(
            self.expeditor_argv(*args),
            env=self.env(host, **{**(extra or {}), **settings}),
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def rows(self, query: LiteralString, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows of ``query`` in the store's schema (where the queue's tables are too)."""
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f"SET search_path TO {STORE_SCHEMA}")
            return connection.cursor(row_factory=dict_row).execute(query, params).fetchall()

    def execute(self, statement: LiteralString, params: tuple[Any, ...] = ()) -> int:
        """Run one statement in the store's schema; the rows it touched."""
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f"SET search_path TO {STORE_SCHEMA}")
            return connection.execute(statement, params).rowcount

    def record(self, campaign: str, name: str) -> dict[str, Any] | None:
        found = self.rows("SELECT * FROM dispatches WHERE campaign_id = %s AND name = %s", (campaign, name))
        return found[0] if found else None

    def wait_for(self, what: str, probe: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05) -> Any:
        """Poll the database (``probe``) until it answers something truthy; fails after ``timeout`` naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            found = probe()
            if found:
                return found
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {w.host} ---\n{w.text()[-3000:]}" for w in self.workers)
                pytest.fail(f"{what}: not within {timeout} s\n{logs}")
            time.sleep(interval)

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()


@pytest.fixture
def queue_hosts(queue_database_url: str, tmp_path: Path) -> Iterator[QueueHosts]:
    """Workers on this module's queue database, in ``tmp_path``; all stopped at the end of the test."""
    hosts = QueueHosts(url=queue_database_url, root=tmp_path)
    try:
        yield hosts
    finally:
        hosts.stop_all()
        with contextlib.suppress(psycopg.Error):
            # The next test of the module starts from an empty queue and store.
            hosts.execute(
                "TRUNCATE procrastinate_jobs, procrastinate_workers, dispatches, runs, step_executions, owners, "
                "transcripts CASCADE"
            )
