"""Shared set-up for the queue benchmarks: a PostgreSQL database with the store's and the queue's schemas, and hosts.

Server: ``EXPEDITOR_BENCH_DATABASE_URL`` (a database the script may fill), else a throwaway cluster like the
tests' (``tests/support/postgres.py``: loopback, fsync off). Hosts are real ``expeditor worker`` processes,
each with its own host name, home and Claude config directory, started by the tests' helper
(``tests/support/queue_hosts.py``), with the clocks given here instead of the tests' shortest ones.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Callable, Generator
from typing import Any

import psycopg
from tests.support.postgres import STORE_SCHEMA, PostgresCluster
from tests.support.queue_hosts import QueueHosts

from bench.pg_store import bench_database
from expeditor.queue.schema import migrate_queue
from expeditor.queue.tasks import defer_in_claim
from expeditor.state import Claim, Owner
from expeditor.state.pg_schema import migrate
from expeditor.state.postgres import PostgresCampaignStore
from expeditor.testing import read_invocation_log

__all__ = [
    "HANGING",
    "QUICK",
    "Database",
    "clocks",
    "defer_dispatch",
    "launches",
    "percentile",
    "queue_database",
    "summary",
    "wait_until",
]

HANGING = {"steps": [{"assistant": "working"}, {"hang": True}]}
QUICK = {"steps": [{"assistant": "done"}, {"result": {}}]}


class Database:
    """The benchmark's database, and its cluster when it is a throwaway one (None: a given server)."""

    def __init__(self, url: str, cluster: PostgresCluster | None) -> None:
        self.url = url
        self.cluster = cluster


@contextlib.contextmanager
def queue_database() -> Generator[Database]:
    """A migrated database (store and queue) for one benchmark run."""
    with bench_database() as (url, cluster):
        _migrate(url)
        yield Database(url, cluster)


def _migrate(url: str) -> None:
    with psycopg.connect(url) as connection:
        migrate(connection, STORE_SCHEMA)
    with psycopg.connect(url) as connection:
        migrate_queue(connection, STORE_SCHEMA)


def clocks(lease_interval: float, lease_ttl: float, stall_check_interval: float, **more: str) -> dict[str, str]:
    """The EXPEDITOR_ variables of every host of a run: these liveness clocks, a quiet log, and ``more``."""
    return {
        "EXPEDITOR_LEASE_INTERVAL": str(lease_interval),
        "EXPEDITOR_LEASE_TTL": str(lease_ttl),
        "EXPEDITOR_STALL_CHECK_INTERVAL": str(stall_check_interval),
        **more,
    }


def scenario(steps: dict[str, Any]) -> str:
    return json.dumps(steps)


def defer_dispatch(store: PostgresCampaignStore, hosts: QueueHosts, campaign: str, name: str) -> Claim:
    """Claim ``name`` as a queue-mode dispatcher does (its job deferred in the claim), without waiting for it."""
    return store.claim(
        campaign,
        name,
        recipe="diagnose",
        inputs={"problem": name},
        caller_session_id=None,
        owner=Owner.current(store.host),
        on_launch=defer_in_claim(queue="dispatches", cwd=str(hosts.root), stale_threshold=None),
    )


def launches(hosts: QueueHosts) -> list[dict[str, Any]]:
    if not hosts.agent_log.is_file():
        return []
    return [entry for entry in read_invocation_log(hosts.agent_log) if entry.get("event") == "launch"]


def wait_until(what: str, probe: Callable[[], Any], *, timeout: float, interval: float = 0.01) -> Any:
    """Poll ``probe`` (another process's progress: there is no event to wait on) until truthy; SystemExit if not."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout} s")
        time.sleep(interval)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(label: str, seconds: list[float]) -> str:
    ms = [sample * 1000 for sample in seconds]
    return (
        f"{label}: p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, "
        f"mean {statistics.fmean(ms):.1f} ms, min {min(ms):.1f} ms, max {max(ms):.1f} ms (n={len(ms)})"
    )
