"""What the tests' throwaway PostgreSQL cluster costs: initdb, start, the migrated template, a database per module.

The same steps as ``tests/support/postgres.py`` (its ``PostgresCluster``), timed one by one over a few
rounds: ``initdb --no-sync``, ``pg_ctl start -w``, the role and migrated template database, ``CREATE
DATABASE … TEMPLATE`` (what each test module pays), ``pg_ctl stop -m immediate`` and a restart (the
"server stopped mid-use" test), and removing it all.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time

import psycopg
from psycopg import sql
from tests.support.postgres import STORE_SCHEMA, PostgresCluster, find_pg_bindir

from expeditor.state.pg_schema import migrate


def one_round(databases: int) -> dict[str, list[float]]:
    bindir = find_pg_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL not found: install it or set EXPEDITOR_TEST_PG_BINDIR")
    figures: dict[str, list[float]] = {}

    def timed(name: str, began: float) -> None:
        figures.setdefault(name, []).append(time.monotonic() - began)

    cluster = PostgresCluster(bindir, password=secrets.token_urlsafe(12))
    try:
        began = time.monotonic()
        cluster.initialize()
        timed("initdb --no-sync (+ settings, watchdog)", began)
        began = time.monotonic()
        cluster.start()
        timed("pg_ctl start -w", began)
        admin = f"postgresql://postgres:{cluster.password}@127.0.0.1:{cluster.port}/postgres"
        began = time.monotonic()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute("CREATE DATABASE bench_template")
        with psycopg.connect(admin.rpartition("/")[0] + "/bench_template") as connection:
            migrate(connection, STORE_SCHEMA)
        timed("migrated template database", began)
        with psycopg.connect(admin, autocommit=True) as connection:
            for number in range(databases):
                began = time.monotonic()
                connection.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE bench_template").format(sql.Identifier(f"module_{number}"))
                )
                timed("CREATE DATABASE … TEMPLATE (one test module)", began)
        began = time.monotonic()
        cluster.stop()
        timed("pg_ctl stop -m immediate", began)
        began = time.monotonic()
        cluster.start()
        timed("pg_ctl start -w after an immediate stop", began)
    finally:
        began = time.monotonic()
        cluster.destroy()
        timed("stop and remove", began)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--databases", type=int, default=5, help="databases copied from the template per round")
    args = parser.parse_args()
    totals: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, samples in one_round(args.databases).items():
            totals.setdefault(name, []).extend(samples)
    for name, samples in totals.items():
        ms = [sample * 1000 for sample in samples]
        print(f"{name}: median {statistics.median(ms):.0f} ms ({min(ms):.0f}–{max(ms):.0f}, n={len(ms)})")


if __name__ == "__main__":
    main()
