"""The PostgreSQL store beside SQLite: short-circuit latency with many records, transitions/s with 8 writers.

Server: ``EXPEDITOR_BENCH_DATABASE_URL`` (a database this script may fill: it creates the store's schema
in it), else a throwaway cluster like the tests' (``tests/support/postgres.py``: loopback, fsync and
synchronous_commit off, so commit latency here is the server's work, not a disk's).

Short-circuit: the store is filled by SQL (every other job succeeded), then looked up through the public
API: ``find_completed_dispatch`` and a ``claim`` of a succeeded job (the read that answers it without a
write). The same lookups on a SQLite store of the same size are printed beside. Target: p99 < 5 ms.

Transitions: ``--writers`` processes, each with its own store object, repeat for ``--seconds`` a forced
claim of its own job and of one shared job, then ``mark_running`` and ``mark_succeeded`` fenced by the
attempt. A lost update is a launch a writer was granted that the record's attempt count does not show.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Generator
from pathlib import Path

import psycopg
from psycopg import sql
from tests.support.postgres import STORE_SCHEMA, PostgresCluster, find_pg_bindir

from bench._common import temp_root
from bench.store_short_circuit import CAMPAIGNS, percentiles  # CAMPAIGNS is 100, as _FILL spreads them
from bench.store_short_circuit import fill as fill_sqlite
from expeditor.errors import StaleAttempt
from expeditor.state import CampaignStore, ClaimAction, DispatchStatus, Owner, SqliteCampaignStore, inputs_hash
from expeditor.state.pg_schema import migrate
from expeditor.state.postgres import PostgresCampaignStore
from expeditor.usage.models import SessionUsage, TokenUsage

_FILL = """
INSERT INTO dispatches (campaign_id, name, dispatch_id, status, attempts, recipe, inputs, inputs_hash,
    dispatched_session_id, result_summary, outputs, usage, owner_pid, owner_start_time, owner_host,
    created_at, updated_at)
SELECT 'campaign-' || (i %% 100), 'job-' || i, 'dispatch-' || i,
    CASE WHEN i %% 2 = 0 THEN 'success' ELSE 'failure' END, 1, 'implementation', '{"issue":"1"}'::jsonb, %s,
    'session-' || i, 'merged', '{}'::jsonb, %s::jsonb, %s, %s, %s, %s, %s
FROM generate_series(%s, %s) AS i
"""


@contextlib.contextmanager
def bench_database() -> Generator[tuple[str, PostgresCluster | None], None, None]:
    """A URL of an empty database to fill, and the throwaway cluster serving it (None: the one the user gave)."""
    given = os.environ.get("EXPEDITOR_BENCH_DATABASE_URL")
    if given:
        yield given, None
        return
    bindir = find_pg_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL not found: install it, or set EXPEDITOR_BENCH_DATABASE_URL")
    cluster = PostgresCluster(bindir, password=secrets.token_urlsafe(12))
    try:
        cluster.initialize()
        cluster.start()
        admin = f"postgresql://postgres:{cluster.password}@127.0.0.1:{cluster.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute("CREATE DATABASE bench")
        yield admin.rpartition("/")[0] + "/bench", cluster
    finally:
        cluster.destroy()


@contextlib.contextmanager
def database() -> Generator[str, None, None]:
    """A URL of an empty database to fill."""
    with bench_database() as (url, _):
        yield url


def fresh_schema(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(STORE_SCHEMA)))
    with psycopg.connect(url) as connection:
        migrate(connection, STORE_SCHEMA)


def fill_postgres(url: str, records: int) -> None:
    owner = Owner.current()
    usage = SessionUsage(total=TokenUsage(input_tokens=1200, output_tokens=800)).model_dump_json()
    now = time.time()
    with psycopg.connect(url) as connection:
        connection.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(STORE_SCHEMA)))
        for start in range(0, records, 200_000):
            end = min(records, start + 200_000) - 1
            values = (inputs_hash({"issue": "1"}), usage, owner.pid, owner.start_time, owner.host, now, now, start, end)
            connection.execute(_FILL, values)
            connection.commit()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL("VACUUM ANALYZE {}.dispatches").format(sql.Identifier(STORE_SCHEMA)))


def timed_lookup(store: CampaignStore, index: int) -> float:
    """One ``find_completed_dispatch`` of job ``index``: even jobs succeeded, odd ones failed."""
    started = time.perf_counter()
    record = store.find_completed_dispatch(f"campaign-{index % CAMPAIGNS}", f"job-{index}")
    elapsed = time.perf_counter() - started
    assert (record is not None) == (index % 2 == 0)
    return elapsed


def timed_claim(store: CampaignStore, index: int) -> float:
    """A claim of a job that succeeded: answered by a read (the short-circuit the dispatch tool takes)."""
    started = time.perf_counter()
    claim = store.claim(
        f"campaign-{index % CAMPAIGNS}",
        f"job-{index}",
        recipe="implementation",
        inputs={"issue": "1"},
        caller_session_id=None,
        owner=Owner.current(),
    )
    elapsed = time.perf_counter() - started
    assert claim.action is ClaimAction.SHORT_CIRCUIT
    return elapsed


def short_circuit(url: str, sizes: list[int], lookups: int) -> None:
    for records in sizes:
        fresh_schema(url)
        began = time.perf_counter()
        fill_postgres(url, records)
        print(f"PostgreSQL: filled {records:,} records in {time.perf_counter() - began:.1f} s")
        store = PostgresCampaignStore(url)
        names = [random.randrange(records) for _ in range(lookups)]
        successes = [index for index in names if index % 2 == 0][: lookups // 2]
        for index in names[:200]:  # warm the pool and the cache
            timed_lookup(store, index)
        found = [timed_lookup(store, index) for index in names]
        claims = [timed_claim(store, index) for index in successes]
        store.close()
        label = f"{records:,} records"
        print(f"PostgreSQL {label}: find_completed_dispatch {percentiles(found)}")
        print(f"PostgreSQL {label}: claim of a success      {percentiles(claims)}")
        with temp_root() as root_name:
            sqlite = SqliteCampaignStore(Path(root_name) / "state.sqlite3")
            fill_sqlite(sqlite, records)
            found = [timed_lookup(sqlite, index) for index in names]
            claims = [timed_claim(sqlite, index) for index in successes]
            sqlite.close()
        print(f"SQLite     {label}: find_completed_dispatch {percentiles(found)}")
        print(f"SQLite     {label}: claim of a success      {percentiles(claims)}")


def work(kind: str, location: str, index: int, seconds: float) -> None:
    """One writer: print its counts as JSON."""
    if kind == "sqlite":
        store: CampaignStore = SqliteCampaignStore(Path(location), busy_timeout=30)
    else:
        store = PostgresCampaignStore(location, timeout=30)
    owner = Owner.current()
    launches: Counter[str] = Counter()
    transitions = refused = stale = 0
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name in (f"own-{index}", "shared"):
            claim = store.claim("bench", name, recipe="r", inputs={}, caller_session_id=None, owner=owner, force=True)
            if claim.action is not ClaimAction.LAUNCH:
                refused += 1
                continue
            launches[name] += 1
            transitions += 1
            try:
                session = f"{name}-{claim.attempt}"
                store.mark_running("bench", name, attempt=claim.attempt, dispatched_session_id=session)
                store.mark_succeeded("bench", name, attempt=claim.attempt, summary="done")
            except StaleAttempt:
                stale += 1
                continue
            transitions += 2
    store.close()
    print(json.dumps({"launches": launches, "transitions": transitions, "refused": refused, "stale": stale}))


def transitions(kind: str, location: str, writers: int, seconds: float) -> None:
    command = [sys.executable, "-m", "bench.pg_store", "--worker", kind]  # the location (a URL) goes by environment
    environment = {**os.environ, "EXPEDITOR_BENCH_LOCATION": location}
    children = [
        subprocess.Popen(
            [*command, "--index", str(index), "--seconds", str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
        )
        for index in range(writers)
    ]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.close()
    reports = []
    for child in children:
        assert child.stdout is not None
        reports.append(json.loads(child.stdout.read()))
        child.stdout.close()
        child.wait(timeout=120)
    granted: Counter[str] = Counter()
    for report in reports:
        granted.update(report["launches"])
    store = SqliteCampaignStore(Path(location)) if kind == "sqlite" else PostgresCampaignStore(location)
    records = {record.name: record for record in store.list("bench")}
    store.close()
    lost = sum(granted[name] - records[name].attempts for name in granted)
    lost += sum(1 for record in records.values() if record.status is not DispatchStatus.SUCCESS)
    total = sum(report["transitions"] for report in reports)
    idle = sum(report["refused"] for report in reports)
    print(
        f"{kind}: {writers} writer processes for {seconds:g} s: {total:,} transitions, {total / seconds:,.0f}/s; "
        f"{total + idle:,} write transactions ({sum(granted.values()):,} launches, {idle:,} already_running, "
        f"{sum(r['stale'] for r in reports)} stale writes refused); lost updates: {lost} (target 0)"
    )


def main(sizes: list[int], lookups: int, writers: int, seconds: float) -> None:
    with database() as url:
        if sizes:
            short_circuit(url, sizes, lookups)
        if writers:
            fresh_schema(url)
            transitions("postgres", url, writers, seconds)
            with temp_root() as root_name:
                path = Path(root_name) / "state.sqlite3"
                SqliteCampaignStore(path).clear_steps("bench", "none")  # create and migrate before the writers
                transitions("sqlite", str(path), writers, seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--lookups", type=int, default=5_000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--worker", choices=["sqlite", "postgres"], help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker is not None:
        work(arguments.worker, os.environ["EXPEDITOR_BENCH_LOCATION"], arguments.index, arguments.seconds)
    else:
        main(arguments.sizes, arguments.lookups, arguments.writers, arguments.seconds)
