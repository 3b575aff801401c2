"""Racing dispatchers: ``--names`` names, each asked for by every one of ``--processes`` dispatcher processes at once.

Three workers (2 slots each), each its own host. Every dispatcher process (``tests/support/queue_dispatcher.py``:
the queue-mode ``DispatchService`` of a server, in a process of its own, on a host name of its own) opens
its runtime and the queue launcher, then, on one signal for all, dispatches every name ``--callers`` times
concurrently and waits for every outcome. Counted: launches per name in the fake agent's invocation log
(target: exactly 1), jobs per name in the queue, and whether every caller of a name saw the same dispatch
and attempt. Also printed: the dispatcher processes' memory, which bounds how many fit on this machine
(the 1,000-process form, one process per call, needs ~1,000 times that).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
from tests.support.queue_hosts import QueueHosts

from bench._common import temp_root
from bench._queue import QUICK, clocks, launches, queue_database

REPOSITORY = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--names", type=int, default=50)
    parser.add_argument("--processes", type=int, default=20)
    parser.add_argument("--callers", type=int, default=1, help="concurrent calls per name in each process")
    args = parser.parse_args()
    names = [f"race-{index}" for index in range(args.names)]
    settings: dict[str, Any] = clocks(1.0, 3.0, 0.5, EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR=json.dumps(QUICK))
    argv = [sys.executable, "-m", "tests.support.queue_dispatcher", "diagnose", "problem=x", str(args.callers), *names]
    with queue_database() as database, temp_root() as tmp:
        hosts = QueueHosts(url=database.url, root=Path(tmp))
        racers: list[subprocess.Popen[str]] = []
        try:
            for host in ("a", "b", "c"):
                hosts.start(host, wait=False, **settings)
            racers = [
                subprocess.Popen(
                    argv,
                    # Every call of a process waits for a pooled connection at once: a wait is not a failure.
                    env={**hosts.env(f"dispatcher-{index}"), **settings, "EXPEDITOR_STORE_TIMEOUT": "60"},
                    cwd=REPOSITORY,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for index in range(args.processes)
            ]
            for worker in hosts.workers:
                worker.wait_ready()
            for racer in racers:
                assert racer.stdout is not None
                if racer.stdout.readline().strip() != "ready":
                    raise SystemExit("a dispatcher process did not start")
            memory = sorted(psutil.Process(racer.pid).memory_full_info().uss / 1e6 for racer in racers)
            began = time.monotonic()
            for racer in racers:
                assert racer.stdin is not None
                racer.stdin.write("go\n")
                racer.stdin.flush()
            outcomes: list[dict[str, Any]] = []
            failures: list[str] = []
            for racer in racers:
                out, err = racer.communicate(timeout=600)
                outcomes += [json.loads(line) for line in out.splitlines()]
                if racer.returncode != 0:
                    failures.append(err.strip().splitlines()[-1] if err.strip() else f"exit {racer.returncode}")
            took = time.monotonic() - began
            launched = [entry["session_id"] for entry in launches(hosts)]
            per_name = Counter(
                row["name"] for row in hosts.rows("SELECT args->>'name' AS name FROM procrastinate_jobs")
            )
            records = {
                row["name"]: row
                for row in hosts.rows("SELECT name, dispatch_id, attempts, dispatched_session_id FROM dispatches")
            }
        finally:
            for racer in racers:
                if racer.poll() is None:
                    racer.kill()
                    racer.wait()
            hosts.stop_all()
    calls = args.processes * args.callers
    seen_other = [
        outcome["name"]
        for outcome in outcomes
        if (outcome["dispatch_id"], outcome["attempts"]) != (records[outcome["name"]]["dispatch_id"], 1)
    ]
    # A name launched twice would show a session no record names, or one session twice.
    recorded = {str(row["dispatched_session_id"]) for row in records.values()}
    one_each = len(launched) == args.names and set(launched) == recorded
    print(
        f"{args.names} names x {calls} concurrent calls each ({args.processes} processes x {args.callers} caller(s)), "
        f"3 workers x 2 slots: {len(outcomes)} outcomes in {took:.1f} s"
    )
    print(
        f"launches: {len(launched)} for {args.names} names, one per name: {one_each}; "
        f"jobs per name: {dict(Counter(per_name.values()))}"
    )
    print(f"callers that saw another dispatch or attempt than the record's: {len(seen_other)}")
    for failure in failures:
        print(f"  a dispatcher process failed: {failure}")
    print(
        f"dispatcher process memory (USS): median {memory[len(memory) // 2]:.0f} MB, max {memory[-1]:.0f} MB; "
        f"machine: {psutil.virtual_memory().total / 1e9:.0f} GB"
    )
    if not one_each or seen_other or failures:
        raise SystemExit("NOT exactly one launch per name")


if __name__ == "__main__":
    main()
