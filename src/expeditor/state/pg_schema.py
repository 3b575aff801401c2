"""The PostgreSQL schema of the campaign store and its migrations.

Every table lives in one PostgreSQL schema (the ``store_schema`` setting, default ``expeditor``), so the
store can share a database with other applications (and, later, the job queue). ``schema_version`` in
it holds one row per applied migration; ``MIGRATIONS[i]`` brings the schema from version ``i`` to
``i + 1``, and a new version is one more function appended to the tuple.

A shared database is never migrated behind the back of the hosts using it: only ``expeditor db
migrate`` calls ``migrate``; a store calls ``ensure_current``, which refuses a schema older than this
expeditor knows (run the migration) or newer (this host runs an older expeditor than another). The
migration holds a transaction-scoped advisory lock keyed on the schema name, so hosts migrating at
once apply each migration exactly once: the later ones wait, then find nothing left to do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, LiteralString, NamedTuple

import psycopg
from psycopg import sql

from expeditor.errors import StoreUnavailable

__all__ = [
    "DISPATCH_FINAL_CHANNEL",
    "MIGRATIONS",
    "MIGRATION_LOCK_CLASS",
    "SCHEMA_VERSION",
    "Migrated",
    "ensure_current",
    "migrate",
    "schema_version",
]

Connection = psycopg.Connection[Any]

# The advisory lock's first key says "expeditor's migrations"; the second is the schema name's hash.
MIGRATION_LOCK_CLASS = 0x45585044  # "EXPD"

_NOW: LiteralString = "extract(epoch FROM now())"

# Migration 1 is the SQLite schema as its version 3 left it: epoch seconds as double precision, JSON
# as jsonb, plus the owner leases only a shared store needs.
_V1: tuple[LiteralString, ...] = (
    """
    CREATE TABLE dispatches (
        campaign_id           text NOT NULL,
        name                  text NOT NULL,
        dispatch_id           text NOT NULL UNIQUE,
        status                text NOT NULL CHECK (status IN
                                  ('pending', 'running', 'success', 'failure', 'interrupted', 'cancelled')),
        attempts              integer NOT NULL CHECK (attempts >= 1),
        recipe                text NOT NULL,
        inputs                jsonb NOT NULL,
        inputs_hash           text NOT NULL,
        caller_session_id     text,
        dispatched_session_id text,
        result_summary        text,
        outputs               jsonb NOT NULL DEFAULT '{}',
        usage                 jsonb,
        error                 text,
        owner_pid             integer,
        owner_start_time      double precision,
        owner_host            text,
        created_at            double precision NOT NULL,
        updated_at            double precision NOT NULL,
        started_at            double precision,
        finished_at           double precision,
        PRIMARY KEY (campaign_id, name)
    )
    """,
    "CREATE INDEX dispatches_by_status ON dispatches (campaign_id, status)",
    """
    CREATE TABLE runs (
        run_id            text NOT NULL,
        launch            integer NOT NULL CHECK (launch >= 1),
        kind              text NOT NULL,
        status            text NOT NULL CHECK (status IN
                              ('running', 'success', 'failure', 'cancelled', 'interrupted')),
        caller_session_id text,
        campaign_id       text,
        job_name          text,
        dispatch_id       text,
        attempt           integer,
        step_sequence     integer,
        termination       text,
        usage             jsonb NOT NULL,
        reason            text,
        transcript_path   text,
        label             text,
        model             text,
        api_base_url      text,
        loc_changed       integer,
        evidence          jsonb,
        last_moved_at     double precision,
        owner_pid         integer NOT NULL,
        owner_start_time  double precision NOT NULL,
        owner_host        text NOT NULL,
        started_at        double precision NOT NULL,
        finished_at       double precision,
        updated_at        double precision NOT NULL,
        PRIMARY KEY (run_id, launch)
    )
    """,
    "CREATE INDEX runs_by_job ON runs (campaign_id, job_name)",
    "CREATE INDEX runs_by_dispatch ON runs (dispatch_id)",
    "CREATE INDEX runs_by_caller ON runs (caller_session_id)",
    "CREATE INDEX runs_running ON runs (status) WHERE status = 'running'",
    """
    CREATE TABLE step_executions (
        campaign_id text NOT NULL,
        job_name    text NOT NULL,
        sequence    integer NOT NULL CHECK (sequence >= 1),
        step        text NOT NULL,
        status      text NOT NULL,
        captures    jsonb NOT NULL,
        run_id      text,
        started_at  double precision,
        finished_at double precision,
        usage       jsonb,
        attempts    integer NOT NULL DEFAULT 0,
        reason      text,
        PRIMARY KEY (campaign_id, job_name, sequence)
    )
    """,
    # One row per live process that owns records; times are the database's clock, never a host's.
    """
    CREATE TABLE owners (
        host             text NOT NULL,
        pid              integer NOT NULL,
        start_time       double precision NOT NULL,
        kind             text NOT NULL,
        started_at       double precision NOT NULL,
        lease_expires_at double precision NOT NULL,
        PRIMARY KEY (host, pid, start_time)
    )
    """,
    "CREATE INDEX owners_by_expiry ON owners (lease_expires_at)",
)


def _v1(connection: Connection) -> None:
    """Dispatches, runs, step executions and owner leases."""
    for statement in _V1:
        connection.execute(statement)


DISPATCH_FINAL_CHANNEL = "expeditor_dispatch_final"
_NOTIFY_FINAL: LiteralString = f"""
    CREATE FUNCTION notify_dispatch_final() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('{DISPATCH_FINAL_CHANNEL}', NEW.dispatch_id);
        RETURN NULL;
    END;
    $$
"""


def _v2(connection: Connection) -> None:
    """Scale-out: the session a pending attempt resumes, the queue job that runs it, its cwd and stale
    threshold, on the record; a notification when a dispatch ends; the queue's schema version
    (procrastinate's, which records none itself; ``expeditor db migrate`` writes it)."""
    for column in ("resume_session_id text", "queue_job_id bigint", "cwd text", "stale_threshold double precision"):
        connection.execute(f"ALTER TABLE dispatches ADD COLUMN {column}")
    # A dispatch reaching its end wakes whoever waits for it on another host (the queue launcher).
    connection.execute(_NOTIFY_FINAL)
    connection.execute(
        "CREATE TRIGGER dispatch_final AFTER INSERT OR UPDATE OF status ON dispatches FOR EACH ROW "
        "WHEN (NEW.status NOT IN ('pending', 'running')) EXECUTE FUNCTION notify_dispatch_final()"
    )
    connection.execute(
        "CREATE TABLE queue_version (engine text PRIMARY KEY, version text NOT NULL, "
        "applied_at double precision NOT NULL)"
    )


def _v3(connection: Connection) -> None:
    """Scale-out, across hosts: running sessions' transcripts checkpointed into the store (``queue.transcripts``:
    zlib-compressed pieces appended by byte offset, whole lines only), and each worker's slots on its lease."""
    connection.execute(
        "CREATE TABLE transcripts (session_id text NOT NULL, byte_offset bigint NOT NULL CHECK (byte_offset >= 0), "
        "raw_length integer NOT NULL CHECK (raw_length > 0), data bytea NOT NULL, host text NOT NULL, "
        "stored_at double precision NOT NULL, PRIMARY KEY (session_id, byte_offset))"
    )
    connection.execute("ALTER TABLE owners ADD COLUMN slots integer")


def _v4(connection: Connection) -> None:
    """The git worktree and branch a job runs in, and whether it is isolated (``isolation: worktree``: a queue
    worker reads it from the record)."""
    connection.execute(
        "ALTER TABLE dispatches ADD COLUMN worktree text, ADD COLUMN branch text, ADD COLUMN isolation text"
    )


def _v5(connection: Connection) -> None:
    """Budgets of campaigns and jobs; a campaign's own has the job name ''."""
    connection.execute(
        """
        CREATE TABLE budgets (
            campaign_id    text NOT NULL,
            job_name       text NOT NULL DEFAULT '',
            max_budget_usd double precision CHECK (max_budget_usd > 0),
            max_tokens     bigint CHECK (max_tokens > 0),
            updated_at     double precision NOT NULL,
            PRIMARY KEY (campaign_id, job_name)
        )
        """
    )


MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_v1, _v2, _v3, _v4, _v5)
SCHEMA_VERSION = len(MIGRATIONS)


class Migrated(NamedTuple):
    """What one ``migrate`` call found and left."""

    before: int
    after: int


def schema_version(connection: Connection, schema: str) -> int:
    """The version of the store in ``schema``: 0 when the schema or its version table does not exist."""
    table = connection.execute("SELECT to_regclass(%s)", (f"{_quoted(connection, schema)}.schema_version",))
    found = table.fetchone()
    if found is None or found[0] is None:
        return 0
    query = sql.SQL("SELECT COALESCE(MAX(version), 0) FROM {}.schema_version").format(sql.Identifier(schema))
    row = connection.execute(query).fetchone()
    return 0 if row is None else int(row[0])


def migrate(connection: Connection, schema: str) -> Migrated:
    """Apply the migrations the store in ``schema`` lacks, in one transaction under the migration lock.

    Refuses (StoreUnavailable) a schema newer than this expeditor knows, changing nothing.
    """
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (MIGRATION_LOCK_CLASS, schema))
        before = schema_version(connection, schema)
        if before > SCHEMA_VERSION:
            raise StoreUnavailable(_newer(before, f"schema {schema!r}"))
        if before == SCHEMA_VERSION:
            return Migrated(before, before)
        identifier = sql.Identifier(schema)
        connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(identifier))
        # Unqualified names in the migrations land in the store's schema; the setting ends with the transaction.
        connection.execute("SELECT set_config('search_path', %s, true)", (_quoted(connection, schema),))
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version integer PRIMARY KEY, applied_at double precision NOT NULL)"
        )
        for version in range(before + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version - 1](connection)
            connection.execute(
                sql.SQL("INSERT INTO schema_version (version, applied_at) VALUES (%s, {})").format(sql.SQL(_NOW)),
                (version,),
            )
    return Migrated(before, SCHEMA_VERSION)


def ensure_current(connection: Connection, schema: str, *, store: str) -> None:
    """Refuse (StoreUnavailable) a store whose schema is not the version this expeditor knows.

    ``store`` names it in the message (a URL without its password).
    """
    found = schema_version(connection, schema)
    if found < SCHEMA_VERSION:
        state = "has no expeditor schema" if found == 0 else f"has schema version {found}"
        raise StoreUnavailable(
            f"the campaign store {store} (schema {schema!r}) {state}; this expeditor needs version "
            f"{SCHEMA_VERSION}: run `expeditor db migrate`"
        )
    if found > SCHEMA_VERSION:
        raise StoreUnavailable(_newer(found, f"{store} (schema {schema!r})"))


def _newer(found: int, store: str) -> str:
    return (
        f"the campaign store {store} has schema version {found}, newer than the {SCHEMA_VERSION} this "
        "expeditor knows: another host migrated it with a newer expeditor; upgrade expeditor on this host"
    )


def _quoted(connection: Connection, schema: str) -> str:
    """``schema`` as an SQL identifier (quoted when it needs to be)."""
    return sql.Identifier(schema).as_string(connection)
