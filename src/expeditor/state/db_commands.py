"""``expeditor db migrate``: bring a shared PostgreSQL store's schema to the version this expeditor knows.

Stores never migrate a shared database themselves (other hosts may run an older expeditor); this command
does, once, for all of them: it prints the version it found and the one it left. Every failure is one
line naming the server as ``user@host:port/db``, never its password.
"""

from __future__ import annotations

import re
from typing import TextIO

from expeditor.config import Settings
from expeditor.errors import StoreUnavailable
from expeditor.state.opening import postgres_url, require_psycopg
from expeditor.state.store_url import redacted_url, scrubbed

__all__ = ["migrate_command"]


def migrate_command(settings: Settings, out: TextIO) -> int:
    """Apply the migrations the store lacks; 0 when it is current afterwards (StoreUnavailable if not)."""
    url = postgres_url(settings)
    if url is None:
        out.write(
            f"the campaign store is SQLite ({settings.state_path}): it migrates itself when opened, nothing to do; "
            "set store_url (EXPEDITOR_STORE_URL) to migrate a shared PostgreSQL store\n"
        )
        return 0
    require_psycopg(url)
    # Imported here: psycopg is an optional extra, present only once a PostgreSQL store was chosen.
    import psycopg

    from expeditor.state.pg_connections import check_url
    from expeditor.state.pg_schema import SCHEMA_VERSION, migrate

    check_url(url)
    server = redacted_url(url)
    schema = settings.store_schema
    try:
        # libpq's connect_timeout is whole seconds, and less than 2 means 2.
        with psycopg.connect(url, connect_timeout=max(2, round(settings.store_timeout))) as connection:
            migrated = migrate(connection, schema)
    except psycopg.Error as exc:
        raise StoreUnavailable(f"cannot migrate the campaign store {server}: {scrubbed(_one_line(exc), url)}") from exc
    if migrated.before == migrated.after:
        out.write(f"{server} schema {schema}: version {migrated.after}, current: nothing to apply\n")
    else:
        out.write(
            f"{server} schema {schema}: version {migrated.before} -> {migrated.after} "
            f"(this expeditor knows version {SCHEMA_VERSION})\n"
        )
    return 0


def _one_line(exc: BaseException) -> str:
    """libpq's message on one line (it spreads one error over several, with hints)."""
    text = re.sub(r"\s+", " ", str(exc)).strip()
    return text or type(exc).__name__
