"""The SQLite schema and its migrations.

``schema_version`` holds one row per applied migration. ``MIGRATIONS[i]`` brings the schema
from version ``i`` to ``i + 1``; a new version is one more function appended to the tuple.
``migrate`` runs inside the caller's ``BEGIN IMMEDIATE`` transaction, so two processes
opening a fresh store at once apply each migration exactly once.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from expeditor.errors import StoreUnavailable

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "schema_version"]

_V1 = (
    """
    CREATE TABLE dispatches (
        campaign_id           TEXT NOT NULL,
        name                  TEXT NOT NULL,
        dispatch_id           TEXT NOT NULL UNIQUE,
        status                TEXT NOT NULL CHECK (status IN
                                  ('pending', 'running', 'success', 'failure', 'interrupted', 'cancelled')),
        attempts              INTEGER NOT NULL CHECK (attempts >= 1),
        recipe                TEXT NOT NULL,
        inputs                TEXT NOT NULL,
        inputs_hash           TEXT NOT NULL,
        caller_session_id     TEXT,
        dispatched_session_id TEXT,
        result_summary        TEXT,
        outputs               TEXT NOT NULL DEFAULT '{}',
        usage                 TEXT,
        error                 TEXT,
        owner_pid             INTEGER,
        owner_start_time      REAL,
        owner_host            TEXT,
        created_at            REAL NOT NULL,
        updated_at            REAL NOT NULL,
        started_at            REAL,
        finished_at           REAL,
        PRIMARY KEY (campaign_id, name)
    )
    """,
    "CREATE INDEX dispatches_by_status ON dispatches (campaign_id, status)",
    """
    CREATE TABLE runs (
        run_id            TEXT NOT NULL,
        launch            INTEGER NOT NULL CHECK (launch >= 1),
        kind              TEXT NOT NULL,
        status            TEXT NOT NULL CHECK (status IN
                              ('running', 'success', 'failure', 'cancelled', 'interrupted')),
        caller_session_id TEXT,
        campaign_id       TEXT,
        job_name          TEXT,
        dispatch_id       TEXT,
        attempt           INTEGER,
        step_sequence     INTEGER,
        termination       TEXT,
        usage             TEXT NOT NULL,
        reason            TEXT,
        transcript_path   TEXT,
        owner_pid         INTEGER NOT NULL,
        owner_start_time  REAL NOT NULL,
        owner_host        TEXT NOT NULL,
        started_at        REAL NOT NULL,
        finished_at       REAL,
        updated_at        REAL NOT NULL,
        PRIMARY KEY (run_id, launch)
    )
    """,
    "CREATE INDEX runs_by_job ON runs (campaign_id, job_name)",
    "CREATE INDEX runs_by_dispatch ON runs (dispatch_id)",
    "CREATE INDEX runs_running ON runs (status) WHERE status = 'running'",
    """
    CREATE TABLE step_executions (
        campaign_id TEXT NOT NULL,
        job_name    TEXT NOT NULL,
        sequence    INTEGER NOT NULL CHECK (sequence >= 1),
        step        TEXT NOT NULL,
        status      TEXT NOT NULL,
        captures    TEXT NOT NULL,
        run_id      TEXT,
        started_at  REAL,
        finished_at REAL,
        PRIMARY KEY (campaign_id, job_name, sequence)
    )
    """,
)


def _v1(connection: sqlite3.Connection) -> None:
    """Dispatches, runs and step executions."""
    for statement in _V1:
        connection.execute(statement)


def _v2(connection: sqlite3.Connection) -> None:
    """What reports need: a run's label, model, API base URL and lines changed; a step's usage, attempts, reason."""
    for column in ("label TEXT", "model TEXT", "api_base_url TEXT", "loc_changed INTEGER"):
        connection.execute(f"ALTER TABLE runs ADD COLUMN {column}")
    for column in ("usage TEXT", "attempts INTEGER NOT NULL DEFAULT 0", "reason TEXT"):
        connection.execute(f"ALTER TABLE step_executions ADD COLUMN {column}")


def _v3(connection: sqlite3.Connection) -> None:
    """The evidence for a run's end (what decided it, which markers vouched, what was killed); runs by caller."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(runs)")}
    if "evidence" not in columns:  # development builds briefly added it in version 2
        connection.execute("ALTER TABLE runs ADD COLUMN evidence TEXT")
    # A dispatched orchestrator's run_skill calls are found by their caller, for its job's usage.
    connection.execute("CREATE INDEX runs_by_caller ON runs (caller_session_id)")


def _v4(connection: sqlite3.Connection) -> None:
    """When a running run's session last moved, pushed with its usage so far (``record_run_progress``)."""
    connection.execute("ALTER TABLE runs ADD COLUMN last_moved_at REAL")


def _v5(connection: sqlite3.Connection) -> None:
    """The session a pending attempt resumes, on the record (its launcher may not be its claimer), and the
    queue job that runs it, with its cwd and stale threshold (a PostgreSQL store only; the columns keep the
    two schemas alike)."""
    connection.execute("ALTER TABLE dispatches ADD COLUMN resume_session_id TEXT")
    for column in ("queue_job_id INTEGER", "cwd TEXT", "stale_threshold REAL"):
        connection.execute(f"ALTER TABLE dispatches ADD COLUMN {column}")


def _v6(connection: sqlite3.Connection) -> None:
    """The git worktree and branch a job runs in, and whether it is isolated (``isolation: worktree``: a queue
    worker reads it from the record)."""
    for column in ("worktree TEXT", "branch TEXT", "isolation TEXT"):
        connection.execute(f"ALTER TABLE dispatches ADD COLUMN {column}")


def _v7(connection: sqlite3.Connection) -> None:
    """Budgets of campaigns and jobs; a campaign's own has the job name ''."""
    connection.execute(
        """
        CREATE TABLE budgets (
            campaign_id    TEXT NOT NULL,
            job_name       TEXT NOT NULL DEFAULT '',
            max_budget_usd REAL CHECK (max_budget_usd > 0),
            max_tokens     INTEGER CHECK (max_tokens > 0),
            updated_at     REAL NOT NULL,
            PRIMARY KEY (campaign_id, job_name)
        )
        """
    )


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2, _v3, _v4, _v5, _v6, _v7)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(connection: sqlite3.Connection) -> int:
    """The store's schema version: 0 for an empty file."""
    exists = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'")
    if exists.fetchone() is None:
        return 0
    found: int = connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
    return found


def migrate(connection: sqlite3.Connection) -> int:
    """Apply the migrations this store lacks; returns the version it had. Call inside a transaction."""
    connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    found = schema_version(connection)
    if found > SCHEMA_VERSION:
        raise StoreUnavailable(
            f"the campaign store has schema version {found}, newer than the {SCHEMA_VERSION} this expeditor "
            "knows: upgrade expeditor, or point it at another home"
        )
    for version in range(found + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[version - 1](connection)
        connection.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, time.time()))
    return found
