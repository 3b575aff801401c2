"""What the hosts sharing a PostgreSQL store are doing: for ``expeditor status`` (issue 27, item 7).

Read from the store's own tables, all in one transaction: the owner leases (``owners``; a worker's also
say its slots), the dispatch records (who runs what) and, when the queue's schema is there, the jobs
waiting for a worker. A lease's heartbeat age is by the database's clock: ``lease_ttl`` minus what is
left of it (every host renews for ``lease_ttl``, the setting they share).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from expeditor.config import Settings
from expeditor.errors import StoreUnavailable
from expeditor.state.opening import postgres_url

if TYPE_CHECKING:  # psycopg is the optional postgres extra: imported only once a PostgreSQL store is read
    from expeditor.state.pg_connections import PgServer
    from expeditor.state.pg_rows import PgConnection

__all__ = ["ClusterView", "HostLease", "cluster_of", "read_cluster"]

_NOW = "extract(epoch FROM now())"
_LEASES = f"""
SELECT o.host, o.pid, o.kind, o.slots, o.lease_expires_at - {_NOW} AS left_s,
       (SELECT count(*) FROM dispatches d WHERE d.status = 'running' AND d.owner_host = o.host
        AND d.owner_pid = o.pid AND d.owner_start_time = o.start_time) AS in_use
FROM owners o ORDER BY o.host, o.kind, o.pid
"""
_PER_HOST = (
    "SELECT owner_host AS host, status, count(*) AS n FROM dispatches "
    "WHERE owner_host IS NOT NULL GROUP BY owner_host, status ORDER BY owner_host, status"
)


class HostLease(BaseModel):
    """One process holding an owner lease: a worker, a server, a dispatching command."""

    host: str = Field(description="The host it runs on (its host_name).")
    pid: int = Field(description="Its process id on that host.")
    kind: str = Field(description="What it is: worker, server, dispatch, ...")
    slots: int | None = Field(description="A worker's slots (sessions it runs at once); None for other kinds.")
    in_use: int = Field(description="Dispatches it is running now.")
    heartbeat_age_s: float = Field(description="Seconds since it last renewed its lease, by the database's clock.")
    alive: bool = Field(description="False once its lease expired: other hosts take its jobs over.")


class ClusterView(BaseModel):
    """The hosts of a shared store, the queue's backlog, and the dispatches each host holds."""

    store: str = Field(description="The store read, user@host:port/db.")
    hosts: list[HostLease] = Field(default_factory=list[HostLease])
    jobs_waiting: int | None = Field(
        default=None, description="Queued jobs no worker has taken yet; None when the store has no queue."
    )
    dispatches_by_host: dict[str, dict[str, int]] = Field(
        default_factory=dict[str, dict[str, int]],
        description="Per host that owns dispatch records: how many are in each status.",
    )


def cluster_of(settings: Settings) -> ClusterView | str | None:
    """The cluster ``settings``' store holds; None for the SQLite store; the reason when it cannot be read."""
    url = postgres_url(settings)
    if url is None:
        return None
    from expeditor.state.pg_connections import PgServer

    server = PgServer(url, schema=settings.store_schema, pool_size=1, timeout=settings.store_timeout)
    try:
        return read_cluster(server, lease_ttl=settings.lease_ttl)
    except StoreUnavailable as exc:
        return str(exc)
    finally:
        server.close()


def read_cluster(server: PgServer, *, lease_ttl: float) -> ClusterView:
    """The store's hosts and queue as one transaction sees them. Raises StoreUnavailable."""

    def query(connection: PgConnection) -> ClusterView:
        view = ClusterView(store=server.server)
        for row in connection.execute(_LEASES).fetchall():
            left = float(row["left_s"])
            view.hosts.append(
                HostLease(
                    host=row["host"],
                    pid=row["pid"],
                    kind=row["kind"],
                    slots=row["slots"],
                    in_use=int(row["in_use"]),
                    heartbeat_age_s=round(max(0.0, lease_ttl - left), 1),
                    alive=left > 0,
                )
            )
        for row in connection.execute(_PER_HOST).fetchall():
            view.dispatches_by_host.setdefault(row["host"], {})[row["status"]] = int(row["n"])
        queue = connection.execute("SELECT to_regclass('procrastinate_jobs') AS found").fetchone()
        if queue is not None and queue["found"] is not None:
            waiting = connection.execute("SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'todo'")
            found = waiting.fetchone()
            view.jobs_waiting = 0 if found is None else int(found["n"])
        return view

    return server.transaction("reading the hosts of the store", query)
