"""Whether this process can use the queue: a PostgreSQL store and the ``queue`` extra, imported only to ask."""

from __future__ import annotations

import importlib

from expeditor.config import Settings
from expeditor.errors import InvalidInput
from expeditor.state.opening import postgres_url

__all__ = ["QUEUE_EXTRA", "queue_missing", "require_queue"]

QUEUE_EXTRA = "pip install 'expeditor[queue]'"


def require_queue(settings: Settings, *, what: str) -> None:
    """Refuse (InvalidInput, one line) to run ``what`` in queue mode without a PostgreSQL store or the extra."""
    if postgres_url(settings) is None:
        raise InvalidInput(
            f"{what} needs a shared PostgreSQL store: set store_url (EXPEDITOR_STORE_URL) to "
            "postgresql://user@host:port/db; the SQLite store under home serves one machine (dispatch_mode local)"
        )
    missing = queue_missing()
    if missing is not None:
        raise InvalidInput(f"{what} needs the queue extra ({missing}): {QUEUE_EXTRA}")


def queue_missing() -> str | None:
    """Why the queue extra cannot be used here (what cannot be imported), or None when it can."""
    for module in ("psycopg", "psycopg_pool", "procrastinate"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"{module} cannot be imported: {exc}"
    return None
