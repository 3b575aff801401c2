"""The one place a campaign store is opened from settings.

SQLite under the home is the embedded default, for one machine; ``store_url`` names a shared
PostgreSQL store for many hosts instead. Every entry point (server, CLI, pipeline runner, status,
reports) opens its store here, so they all agree on which one it is.
"""

from __future__ import annotations

import importlib

from expeditor.config import Settings
from expeditor.errors import InvalidInput
from expeditor.state.sqlite import SqliteCampaignStore
from expeditor.state.store import CampaignStore
from expeditor.state.store_url import POSTGRES_SCHEMES, redacted_url, url_scheme

__all__ = [
    "POSTGRES_EXTRA",
    "open_store",
    "postgres_url",
    "require_psycopg",
    "store_description",
    "store_may_hold_records",
]

POSTGRES_EXTRA = "pip install 'expeditor[postgres]'"


def postgres_url(settings: Settings) -> str | None:
    """The PostgreSQL URL ``settings`` name (password included), or None for the SQLite store.

    Any scheme but ``postgresql://`` and ``postgres://`` is refused (InvalidInput), naming the two.
    """
    if settings.store_url is None:
        return None
    url = settings.store_url.get_secret_value()
    scheme = url_scheme(url)
    if scheme not in POSTGRES_SCHEMES:
        shown = f"scheme {scheme}://" if scheme else "no scheme"
        raise InvalidInput(
            f"store_url has {shown}: expected postgresql:// or postgres:// (a PostgreSQL server), "
            "or no store_url for the SQLite store under home"
        )
    return url


def store_description(settings: Settings) -> str:
    """The store ``settings`` name, as a message shows it: the SQLite file, or ``user@host:port/db``."""
    if settings.store_url is None:
        return str(settings.state_path)
    return redacted_url(settings.store_url.get_secret_value())


def store_may_hold_records(settings: Settings) -> bool:
    """Whether reading the store could find anything: a shared store always may; SQLite once its file exists.

    Readers (status, reports) ask this first so that looking never creates a home where nothing has run.
    """
    return settings.store_url is not None or settings.state_path.is_file()


def open_store(settings: Settings, *, owner_kind: str = "process") -> CampaignStore:
    """The campaign store ``settings`` name, opened (the caller closes it).

    ``owner_kind`` says what this process is (server, pipeline, dispatch…) in a shared store's owner
    leases. A PostgreSQL URL without psycopg installed is refused with the command that installs it.
    """
    url = postgres_url(settings)
    if url is None:
        return SqliteCampaignStore(settings.state_path, host_name=settings.host_name)
    require_psycopg(url)
    # psycopg is an optional extra: its modules are imported only once a PostgreSQL store was chosen.
    from expeditor.state.postgres import PostgresCampaignStore

    return PostgresCampaignStore(
        url,
        schema=settings.store_schema,
        pool_size=settings.store_pool_size,
        timeout=settings.store_timeout,
        host_name=settings.host_name,
        lease_interval=settings.lease_interval,
        lease_ttl=settings.lease_ttl,
        owner_kind=owner_kind,
    )


def require_psycopg(url: str) -> None:
    """Refuse (InvalidInput) a PostgreSQL store when psycopg cannot be imported, naming the install command."""
    try:
        for module in ("psycopg", "psycopg_pool"):
            importlib.import_module(module)
    except ImportError as exc:
        raise InvalidInput(
            f"store_url names a PostgreSQL server ({redacted_url(url)}), but {exc.name or 'psycopg'} cannot be "
            f"imported ({exc}): {POSTGRES_EXTRA}"
        ) from exc
