"""The queue's schema: procrastinate's tables in the store's PostgreSQL schema, at a version we record.

procrastinate ships its schema and its SQL migration files but records no applied version, so ``expeditor db
migrate`` records it (``queue_version``, our table): a first migration applies the whole schema; later ones
apply the migration files between the recorded and the installed versions, in order; a database migrated by
a newer procrastinate is refused, changing nothing. A worker or queue-mode server checks the recorded version
at start (``ensure_queue_schema``) and refuses a database without it, saying to run the migration.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Any, LiteralString, TextIO, cast

import psycopg
from procrastinate.schema import SchemaManager
from psycopg import sql

from expeditor.config import Settings
from expeditor.errors import StoreUnavailable
from expeditor.state.opening import postgres_url
from expeditor.state.store_url import redacted_url, scrubbed

__all__ = [
    "ENGINE",
    "ensure_queue_schema",
    "installed_version",
    "migrate_queue",
    "migrate_queue_command",
    "queue_version",
]

ENGINE = "procrastinate"
Connection = psycopg.Connection[Any]
Version = tuple[int, ...]

# The lock's first key says "the queue's migrations" (expeditor's own use 0x45585044); the second is the schema.
_LOCK_CLASS = 0x45585051  # "EXPQ"
_MIGRATION_NAME = re.compile(r"^(\d+)\.(\d+)\.(\d+)_(\d+)_.*\.sql$")


def installed_version() -> str:
    return importlib.metadata.version(ENGINE)


def _parsed(version: str) -> Version:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def queue_version(connection: Connection, schema: str) -> str | None:
    """The queue schema version recorded in ``schema``; None when none is (or our table is missing)."""
    table = connection.execute("SELECT to_regclass(%s)", (f"{_quoted(connection, schema)}.queue_version",))
    found = table.fetchone()
    if found is None or found[0] is None:
        return None
    query = sql.SQL("SELECT version FROM {}.queue_version WHERE engine = %s").format(sql.Identifier(schema))
    row = connection.execute(query, (ENGINE,)).fetchone()
    return None if row is None else str(row[0])


def migrate_queue(connection: Connection, schema: str) -> tuple[str | None, str]:
    """Bring the queue's schema in ``schema`` to the installed procrastinate; the versions found and left.

    Run after the store's own migrations (its ``queue_version`` table is one of them). Raises StoreUnavailable
    for a database whose queue a newer procrastinate migrated.
    """
    installed = installed_version()
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, schema))
        connection.execute("SELECT set_config('search_path', %s, true)", (_quoted(connection, schema),))
        if connection.execute("SELECT to_regclass('queue_version')").fetchone() in (None, (None,)):
            raise StoreUnavailable(f"schema {schema!r} has no queue_version table: migrate the store first")
        recorded = queue_version(connection, schema)
        if recorded == installed:
            return recorded, installed
        if recorded is None:
            connection.execute(SchemaManager.get_schema())
        elif _parsed(recorded) > _parsed(installed):
            raise StoreUnavailable(_newer(recorded, installed))
        else:
            for path in _migrations_between(_parsed(recorded), _parsed(installed)):
                connection.execute(cast("LiteralString", path.read_text(encoding="utf-8")))
        connection.execute(
            "INSERT INTO queue_version (engine, version, applied_at) VALUES (%s, %s, extract(epoch FROM now())) "
            "ON CONFLICT (engine) DO UPDATE SET version = excluded.version, applied_at = excluded.applied_at",
            (ENGINE, installed),
        )
    return recorded, installed


def ensure_queue_schema(connection: Connection, schema: str, *, store: str) -> None:
    """Refuse (StoreUnavailable) a database whose queue is not at the installed procrastinate's version."""
    installed = installed_version()
    recorded = queue_version(connection, schema)
    if recorded == installed:
        return
    if recorded is not None and _parsed(recorded) > _parsed(installed):
        raise StoreUnavailable(_newer(recorded, installed))
    state = "has no job queue" if recorded is None else f"has the job queue of procrastinate {recorded}"
    raise StoreUnavailable(
        f"the campaign store {store} (schema {schema!r}) {state}; this expeditor needs procrastinate "
        f"{installed}'s: run `expeditor db migrate`"
    )


def _migrations_between(after: Version, upto: Version) -> list[Path]:
    """procrastinate's migration files for versions in (after, upto], in the order they apply."""
    found: list[tuple[Version, int, str, Path]] = []
    for path in Path(SchemaManager.get_migrations_path()).glob("*.sql"):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            continue
        version = (int(match[1]), int(match[2]), int(match[3]))
        if after < version <= upto:
            found.append((version, int(match[4]), path.name, path))
    return [path for *_, path in sorted(found)]


def _newer(recorded: str, installed: str) -> str:
    return (
        f"the job queue was migrated by procrastinate {recorded}, newer than the {installed} installed here: "
        "upgrade expeditor's queue extra on this host (a downgrade is refused)"
    )


def _quoted(connection: Connection, schema: str) -> str:
    return sql.Identifier(schema).as_string(connection)


def migrate_queue_command(settings: Settings, out: TextIO) -> int:
    """``expeditor db migrate``'s second half: the job queue's schema; one line saying what it did."""
    url = postgres_url(settings)
    assert url is not None, "migrated only with a PostgreSQL store"
    server = redacted_url(url)
    schema = settings.store_schema
    try:
        with psycopg.connect(url, connect_timeout=max(2, round(settings.store_timeout))) as connection:
            before, after = migrate_queue(connection, schema)
    except psycopg.Error as exc:
        text = re.sub(r"\s+", " ", str(exc)).strip() or type(exc).__name__
        raise StoreUnavailable(f"cannot migrate the job queue in {server}: {scrubbed(text, url)}") from exc
    if before == after:
        out.write(f"{server} schema {schema}: job queue of {ENGINE} {after}, current: nothing to apply\n")
    else:
        out.write(f"{server} schema {schema}: job queue of {ENGINE} {before or 'none'} -> {after}\n")
    return 0
