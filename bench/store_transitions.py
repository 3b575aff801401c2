"""Transitions per second with concurrent writer processes, and lost updates (target: 0).

Each writer is its own process with its own store object. For a fixed time it repeats a
cycle on its own job and on one job all writers share: a forced claim, then, when the claim
says launch, ``mark_running`` and ``mark_succeeded`` fenced by the attempt. Every write is
one ``BEGIN IMMEDIATE`` transaction with ``synchronous = FULL``. A lost update is a launch a
writer was granted that the record's attempt count does not show.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench._common import temp_root
from expeditor.errors import StaleAttempt
from expeditor.state import ClaimAction, DispatchStatus, Owner, SqliteCampaignStore


def work(path: Path, index: int, seconds: float) -> None:
    """One writer: print its counts as JSON."""
    store = SqliteCampaignStore(path, busy_timeout=30)
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
                refused += 1  # a write transaction that changed nothing: already running
                continue
            launches[name] += 1
            transitions += 1
            try:
                store.mark_running(
                    "bench", name, attempt=claim.attempt, dispatched_session_id=f"{name}-{claim.attempt}"
                )
                store.mark_succeeded("bench", name, attempt=claim.attempt, summary="done")
            except StaleAttempt:
                stale += 1
                continue
            transitions += 2
    store.close()
    print(json.dumps({"launches": launches, "transitions": transitions, "refused": refused, "stale": stale}))


def main(writers: int, seconds: float) -> None:
    with temp_root() as root_name:
        path = Path(root_name) / "state.sqlite3"
        store = SqliteCampaignStore(path)
        store.clear_steps("bench", "none")  # create and migrate before the writers start
        command = [sys.executable, "-m", "bench.store_transitions", "--worker", str(path), "--seconds", str(seconds)]
        children = [
            subprocess.Popen(
                [*command, "--index", str(index)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
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
            child.wait(timeout=60)
        granted: Counter[str] = Counter()
        for report in reports:
            granted.update(report["launches"])
        records = {record.name: record for record in store.list("bench")}
        store.close()
        lost = sum(granted[name] - records[name].attempts for name in granted)
        lost += sum(1 for record in records.values() if record.status is not DispatchStatus.SUCCESS)
        total = sum(report["transitions"] for report in reports)
        idle = sum(report["refused"] for report in reports)
        print(
            f"{writers} writer processes for {seconds:g} s: {total:,} transitions, {total / seconds:,.0f} per second; "
            f"{total + idle:,} write transactions, {(total + idle) / seconds:,.0f} per second "
            f"({sum(granted.values()):,} launches, {idle:,} claims answered already_running, "
            f"{sum(r['stale'] for r in reports)} stale writes refused)"
        )
        print(f"lost updates: {lost} (target 0)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker is not None:
        work(arguments.worker, arguments.index, arguments.seconds)
    else:
        main(arguments.writers, arguments.seconds)
