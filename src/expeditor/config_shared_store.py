"""The settings of a campaign store shared by hosts, and of the dispatch workers on them.

Apart from the one-machine settings (``config.Settings`` inherits these) because they are one concern:
a PostgreSQL store (``store_url``), who owns its records (leases), and the queue that runs dispatches on
workers (``dispatch_mode: queue``). Environment variables and config.yaml reach them as any other setting.
"""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings

__all__ = ["SharedStoreSettings"]


class SharedStoreSettings(BaseSettings):
    """A store shared by hosts (PostgreSQL), owner leases, and the dispatch queue."""

    store_url: SecretStr | None = Field(
        default=None,
        description="A shared campaign store: postgresql://user@host:port/db (password in a password file, "
        "PGPASSFILE). Unset: SQLite under home, for one machine.",
    )
    store_schema: str = Field(
        default="expeditor", pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="PostgreSQL schema of the store's tables."
    )
    store_pool_size: int = Field(default=8, ge=1, le=256, description="Connections to the PostgreSQL store, at most.")
    store_timeout: float = Field(
        default=5, gt=0, le=600, description="Connect, statement and lock timeout of the PostgreSQL store, seconds."
    )
    host_name: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        description="This host as the records' owners name it; hosts sharing a store need different names.",
    )
    lease_interval: float = Field(default=10, gt=0, le=3600, description="Owner lease renewal interval, seconds.")
    lease_ttl: float = Field(
        default=30, gt=0, le=86400, description="An owner whose lease is this old is dead to other hosts, seconds."
    )
    dispatch_mode: Literal["local", "queue"] = Field(
        default="local", description="Where a dispatch runs: local (here), or queue (a free `expeditor worker`)."
    )
    dispatch_queue: str = Field(
        default="dispatches", pattern=r"^[A-Za-z0-9_.-]{1,63}$", description="Queue mode's job queue (worker --queue)."
    )
    stall_check_interval: float = Field(
        default=5, gt=0, le=3600, description="How often workers look for jobs whose worker went silent, seconds."
    )
    transcript_checkpoint_interval: float = Field(
        default=60,
        gt=0,
        le=86400,
        description="Queue mode: how often a worker copies a running orchestrator's new transcript lines into the "
        "store, so another host can resume the session, seconds.",
    )
    transcript_checkpoint_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Queue mode: a transcript is copied into the store up to this size, then no more (logged).",
    )

    @model_validator(mode="after")
    def _lease_outlives_renewals(self) -> SharedStoreSettings:
        if self.lease_ttl <= self.lease_interval:
            raise ValueError(
                f"lease_ttl ({self.lease_ttl:g} s) must be longer than lease_interval ({self.lease_interval:g} s), "
                "or a live owner's lease would expire between renewals"
            )
        return self
