"""Failover through the queue: a dead worker's job running elsewhere, and a cut-off worker's sessions killed.

Two workers (2 slots each, on this machine's cores), each its own host; the fake agent's orchestrator
writes a step, sleeps ``--work`` seconds (so each attempt frees its slot), then succeeds.

- Worker death: the worker running the job has its whole process group SIGKILLed (a host that dies);
  measured until its attempt is interrupted (the run record) and until the next attempt runs on the other
  worker. Target: the stall threshold (``lease_ttl``) + < 2 s.
- Database loss (a throwaway cluster only): ``pg_ctl stop -m immediate`` while a session runs; measured
  until no process of that session is left. Target: < ``lease_ttl``. The cluster is then started again and
  the job runs to its end before the next run.

Clocks default to the prototype's (lease renewed every 1 s, stall threshold 3 s, recovery every 0.5 s).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import time
from pathlib import Path
from typing import Any, cast

import psutil
from tests.support.queue_hosts import QueueHosts

from bench._common import temp_root
from bench._queue import Database, clocks, defer_dispatch, queue_database, wait_until
from expeditor.state.postgres import PostgresCampaignStore

CAMPAIGN = "failover"


def running(hosts: QueueHosts, name: str, attempt: int) -> dict[str, Any] | None:
    record = hosts.record(CAMPAIGN, name)
    if record is None or (record["status"], record["attempts"]) != ("running", attempt):
        return None
    return record


def interrupted(hosts: QueueHosts, session: str) -> bool:
    rows = hosts.rows("SELECT status FROM runs WHERE run_id = %s AND attempt = 1", (session,))
    return bool(rows) and rows[0]["status"] == "interrupted"


def ended(hosts: QueueHosts, name: str, attempt: int) -> bool:
    record = hosts.record(CAMPAIGN, name) or {}
    return (record.get("status"), record.get("attempts")) == ("success", attempt)


def gone(session_id: str) -> bool:
    return not tagged(session_id)


def tagged(session_id: str) -> bool:
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get("EXPEDITOR_SESSION_ID") == session_id:
                return True
    return False


def worker_death(hosts: QueueHosts, store: PostgresCampaignStore, runs: int, settings: dict[str, str]) -> None:
    workers = {host: hosts.start(host, wait=False, **cast("dict[str, Any]", settings)) for host in ("a", "b")}
    for worker in workers.values():
        worker.wait_ready()
    to_interrupted: list[float] = []
    to_elsewhere: list[float] = []
    for number in range(runs):
        name = f"death-{number}"
        defer_dispatch(store, hosts, CAMPAIGN, name)
        first = wait_until("attempt 1 running", functools.partial(running, hosts, name, 1), timeout=60)
        session = str(first["dispatched_session_id"])
        doomed = workers[first["owner_host"]]
        killed = time.monotonic()
        doomed.kill_group()

        wait_until("attempt 1 interrupted", functools.partial(interrupted, hosts, session), timeout=60)
        to_interrupted.append(time.monotonic() - killed)
        second = wait_until("attempt 2 running", functools.partial(running, hosts, name, 2), timeout=60)
        to_elsewhere.append(time.monotonic() - killed)
        assert second["owner_host"] != doomed.host
        print(
            f"  run {number + 1}: {doomed.host} killed; interrupted after {to_interrupted[-1]:.2f} s, "
            f"running on {second['owner_host']} after {to_elsewhere[-1]:.2f} s"
        )
        workers[doomed.host] = hosts.restart(doomed)
        wait_until("the job's end", functools.partial(ended, hosts, name, 2), timeout=120)
    ttl = float(settings["EXPEDITOR_LEASE_TTL"])
    print(
        f"worker death -> job running elsewhere: median {statistics.median(to_elsewhere):.2f} s "
        f"(min {min(to_elsewhere):.2f}, max {max(to_elsewhere):.2f}, n={runs}); stall threshold {ttl:g} s, "
        f"so threshold + {statistics.median(to_elsewhere) - ttl:.2f} s (target < 2 s)"
    )
    print(f"worker death -> attempt interrupted: median {statistics.median(to_interrupted):.2f} s")
    hosts.stop_all()
    hosts.workers.clear()


def database_loss(database: Database, hosts: QueueHosts, runs: int, settings: dict[str, str]) -> None:
    cluster = database.cluster
    if cluster is None:
        print("database loss: skipped (EXPEDITOR_BENCH_DATABASE_URL names a server this script cannot stop)")
        return
    workers = [hosts.start(host, wait=False, **cast("dict[str, Any]", settings)) for host in ("a", "b")]
    for worker in workers:
        worker.wait_ready()
    store = PostgresCampaignStore(hosts.url, host_name="dispatcher", lease_interval=1, lease_ttl=3)
    killed_after: list[float] = []
    try:
        for number in range(runs):
            name = f"loss-{number}"
            defer_dispatch(store, hosts, CAMPAIGN, name)
            first = wait_until("attempt 1 running", functools.partial(running, hosts, name, 1), timeout=60)
            session = str(first["dispatched_session_id"])
            wait_until("its orchestrator", functools.partial(tagged, session), timeout=30)
            cluster.stop()
            stopped = time.monotonic()
            wait_until("the session killed", functools.partial(gone, session), timeout=60, interval=0.005)
            killed_after.append(time.monotonic() - stopped)
            cluster.start()
            print(f"  run {number + 1}: session killed {killed_after[-1]:.2f} s after the database stopped")
            wait_until("the next attempt's end", functools.partial(ended, hosts, name, 2), timeout=120)
    finally:
        store.close()
    ttl = float(settings["EXPEDITOR_LEASE_TTL"])
    print(
        f"database loss -> sessions killed: median {statistics.median(killed_after):.2f} s "
        f"(min {min(killed_after):.2f}, max {max(killed_after):.2f}, n={runs}); target < {ttl:g} s"
    )
    hosts.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--lease-interval", type=float, default=1.0)
    parser.add_argument("--lease-ttl", type=float, default=3.0)
    parser.add_argument("--stall-check-interval", type=float, default=0.5)
    parser.add_argument("--work", type=float, default=3.0, help="seconds each attempt's session works")
    args = parser.parse_args()
    scenario = {"steps": [{"assistant": "working"}, {"sleep": args.work}, {"result": {}}]}
    settings = clocks(
        args.lease_interval,
        args.lease_ttl,
        args.stall_check_interval,
        EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR=json.dumps(scenario),
    )
    with queue_database() as database, temp_root() as tmp:
        hosts = QueueHosts(url=database.url, root=Path(tmp))
        store = PostgresCampaignStore(
            database.url, host_name="dispatcher", lease_interval=args.lease_interval, lease_ttl=args.lease_ttl
        )
        try:
            worker_death(hosts, store, args.runs, settings)
            (Path(tmp) / "loss").mkdir()
            database_loss(database, QueueHosts(url=database.url, root=Path(tmp) / "loss"), args.runs, settings)
        finally:
            store.close()
            hosts.stop_all()


if __name__ == "__main__":
    main()
