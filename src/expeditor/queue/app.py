"""The procrastinate ``App`` of one process, built from settings: its connector on the store's database.

The queue's tables live in the store's PostgreSQL schema (``store_schema``), so every connection the app
opens has that ``search_path``, as the store's own connections do. The app is opened asynchronously
(``open_app``) by the processes that fetch, abort or wait for jobs; deferring inside a claim never uses it
(``tasks.defer_in_claim`` runs on the claim's connection).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import psycopg
from procrastinate import App, PsycopgConnector

from expeditor.config import Settings
from expeditor.errors import StoreUnavailable
from expeditor.queue.schema import ensure_queue_schema
from expeditor.queue.tasks import register_tasks
from expeditor.state.opening import postgres_url
from expeditor.state.store_url import redacted_url, scrubbed

__all__ = ["build_app", "check_queue_schema", "connection_options", "open_app"]


def connection_options(settings: Settings) -> dict[str, Any]:
    """libpq options of every queue connection: the store's schema, and its connect and statement timeouts."""
    milliseconds = max(1, round(settings.store_timeout * 1000))
    return {
        "connect_timeout": max(2, round(settings.store_timeout)),  # libpq: whole seconds, at least 2
        "options": f"-c search_path={settings.store_schema} -c statement_timeout={milliseconds}",
    }


def build_app(settings: Settings, *, queue: str, connections: int) -> App:
    """The app on the store's database, with ``run_dispatch`` registered (default queue ``queue``)."""
    url = postgres_url(settings)
    if url is None:
        raise StoreUnavailable("the job queue needs a PostgreSQL store_url")
    connector = PsycopgConnector(
        conninfo=url, kwargs=connection_options(settings), min_size=1, max_size=connections, name="expeditor queue"
    )
    app = App(connector=connector)
    register_tasks(app, queue=queue)
    return app


def check_queue_schema(settings: Settings) -> None:
    """Refuse (StoreUnavailable) a database whose queue schema is missing or another version; one line."""
    url = postgres_url(settings)
    assert url is not None, "queue mode was checked to have a PostgreSQL store"
    server = redacted_url(url)
    try:
        options = connection_options(settings)
        with psycopg.connect(url, connect_timeout=options["connect_timeout"], options=options["options"]) as connection:
            ensure_queue_schema(connection, settings.store_schema, store=server)
    except psycopg.Error as exc:
        text = str(exc).strip().splitlines()
        why = scrubbed(text[0] if text else type(exc).__name__, url)
        raise StoreUnavailable(f"the campaign store {server} could not be used: {why}") from exc


@contextlib.asynccontextmanager
async def open_app(settings: Settings, *, queue: str, connections: int) -> AsyncGenerator[App]:
    """The app, opened (its pool connected) for the block."""
    app = build_app(settings, queue=queue, connections=connections)
    async with app.open_async():
        yield app
