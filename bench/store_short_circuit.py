"""Short-circuit latency: ``find_completed_dispatch`` on a store holding many records.

The store is filled through SQL in one transaction (claiming 100,000 jobs one by one would
measure the claim, not the lookup), then looked up through the public store API: half the
lookups find a success, half find a job that did not succeed. Also measured through
``anyio.to_thread.run_sync``, the way the server calls it. Target: p99 < 5 ms.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import time
from pathlib import Path

import anyio

from bench._common import temp_root
from expeditor.state import Owner, SqliteCampaignStore, inputs_hash
from expeditor.usage.models import SessionUsage, TokenUsage

CAMPAIGNS = 100


def fill(store: SqliteCampaignStore, records: int) -> None:
    """``records`` dispatches across CAMPAIGNS campaigns; every other one succeeded."""
    store.clear_steps("warm-up", "none")  # a first write creates and migrates the file
    owner = Owner.current()
    usage = SessionUsage(total=TokenUsage(input_tokens=1200, output_tokens=800)).model_dump_json()
    digest = inputs_hash({"issue": "1"})
    now = time.time()
    connection = sqlite3.connect(store.path, isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(
        "INSERT INTO dispatches (campaign_id, name, dispatch_id, status, attempts, recipe, inputs, inputs_hash, "
        "dispatched_session_id, result_summary, outputs, usage, owner_pid, owner_start_time, owner_host, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, 1, 'implementation', '{\"issue\":\"1\"}', ?, ?, ?, '{}', ?, "
        "?, ?, ?, ?, ?)",
        (
            (
                f"campaign-{index % CAMPAIGNS}",
                f"job-{index}",
                f"dispatch-{index}",
                "success" if index % 2 == 0 else "failure",
                digest,
                f"session-{index}",
                "merged",
                usage,
                owner.pid,
                owner.start_time,
                owner.host,
                now,
                now,
            )
            for index in range(records)
        ),
    )
    connection.execute("COMMIT")
    connection.close()


def percentiles(samples_s: list[float]) -> str:
    ms = [sample * 1000 for sample in samples_s]
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return f"p50 {cuts[49]:.3f} ms, p99 {cuts[98]:.3f} ms, max {max(ms):.3f} ms (n={len(ms)})"


def timed(store: SqliteCampaignStore, index: int) -> float:
    """One lookup of job ``index``: even jobs succeeded, odd ones failed."""
    started = time.perf_counter()
    record = store.find_completed_dispatch(f"campaign-{index % CAMPAIGNS}", f"job-{index}")
    elapsed = time.perf_counter() - started
    assert (record is not None) == (index % 2 == 0)
    return elapsed


async def measure_in_threads(store: SqliteCampaignStore, names: list[int]) -> list[float]:
    samples: list[float] = []
    for index in names:
        campaign, name = f"campaign-{index % CAMPAIGNS}", f"job-{index}"
        started = time.perf_counter()
        found = await anyio.to_thread.run_sync(store.find_completed_dispatch, campaign, name)
        samples.append(time.perf_counter() - started)
        assert (found is not None) == (index % 2 == 0)
    return samples


def main(records: int, lookups: int) -> None:
    with temp_root() as root_name:
        store = SqliteCampaignStore(Path(root_name) / "state.sqlite3")
        started = time.perf_counter()
        fill(store, records)
        print(f"filled {records:,} records in {time.perf_counter() - started:.1f} s")
        names = [random.randrange(records) for _ in range(lookups)]
        samples = [timed(store, index) for index in names]
        label = f"find_completed_dispatch with {records:,} records"
        print(f"{label}, direct call:        {percentiles(samples)} (target p99 < 5 ms)")
        threaded = anyio.run(measure_in_threads, store, names)
        print(f"{label}, to_thread.run_sync: {percentiles(threaded)}")
        cold: list[float] = []
        for index in names[:20]:
            fresh = SqliteCampaignStore(store.path)
            cold.append(timed(fresh, index))
            fresh.close()
        print(f"{label}, first call of a new store object (opens the file): {percentiles(cold)}")
        store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=10_000)
    arguments = parser.parse_args()
    main(arguments.records, arguments.lookups)
