"""Dispatch through the queue: latency from the dispatch to the session's start, and throughput with 3 workers.

Three workers (``--slots`` each, on this machine's cores), each its own host. The fake agent's orchestrator
answers at once. This process dispatches as a queue-mode server does (``DispatchService`` with the queue
launcher: validate, claim, defer the job in the claim's transaction, wait for the record's end).

- Latency: ``--sequential`` dispatches one after another. Per dispatch: the call → the claim committed (the
  record's ``created_at``) → a worker took the job (procrastinate's ``started`` event) → the session started
  (the fake agent's own launch line, after its interpreter started) → the call returned. All on one machine,
  so the clocks agree.
- Throughput: ``--burst`` dispatches at once (concurrent calls in this process); time from the first call to
  the last outcome, and dispatches per second.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import anyio
from tests.support.queue_hosts import QueueHosts

from bench._common import temp_root
from bench._queue import QUICK, clocks, launches, queue_database, summary
from expeditor.config import load_settings
from expeditor.dispatch import DispatchService
from expeditor.queue.launcher import open_queue_launcher
from expeditor.runs import CallerContext, open_runtime

CAMPAIGN = "throughput"


async def dispatching(hosts: QueueHosts, sequential: int, burst: int) -> tuple[list[dict[str, float]], float]:
    env = hosts.env("dispatcher")
    settings = load_settings(
        home=hosts.home("dispatcher"),
        store_url=hosts.url,
        dispatch_mode="queue",
        host_name="dispatcher",
        allowed_roots=(hosts.root,),
        claude_config_dir=hosts.claude_dir("dispatcher"),
        lease_interval=float(env["EXPEDITOR_LEASE_INTERVAL"]),
        lease_ttl=float(env["EXPEDITOR_LEASE_TTL"]),
        progress_interval=60,
    )
    caller = CallerContext(None, None)
    calls: list[dict[str, float]] = []
    async with open_runtime(settings, owner_kind="dispatch") as runtime, open_queue_launcher(runtime) as launcher:
        service = DispatchService(runtime, launcher=launcher)
        for number in range(sequential):
            began = time.time()
            outcome = await service.dispatch(
                CAMPAIGN, f"latency-{number}", "diagnose", {"problem": "x"}, caller=caller, cwd=hosts.root
            )
            assert outcome.status == "success", outcome.message
            calls.append({"began": began, "returned": time.time()})

        async def one(number: int) -> None:
            outcome = await service.dispatch(
                CAMPAIGN, f"burst-{number}", "diagnose", {"problem": "x"}, caller=caller, cwd=hosts.root
            )
            assert outcome.status == "success", outcome.message

        began = time.monotonic()
        async with anyio.create_task_group() as tasks:
            for number in range(burst):
                tasks.start_soon(one, number)
        return calls, time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequential", type=int, default=30)
    parser.add_argument("--burst", type=int, default=60)
    parser.add_argument("--slots", type=int, default=2)
    args = parser.parse_args()
    settings: dict[str, Any] = clocks(1.0, 3.0, 0.5, EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR=json.dumps(QUICK))
    with queue_database() as database, temp_root() as tmp:
        hosts = QueueHosts(url=database.url, root=Path(tmp))
        try:
            for host in ("a", "b", "c"):
                hosts.start(host, slots=args.slots, wait=False, **settings)
            for worker in hosts.workers:
                worker.wait_ready()
            calls, burst_seconds = anyio.run(dispatching, hosts, args.sequential, args.burst, backend="asyncio")
            by_session = {entry["session_id"]: entry["time"] for entry in launches(hosts)}
            rows = hosts.rows(
                "SELECT d.name, d.created_at, d.finished_at, d.dispatched_session_id, "
                "extract(epoch FROM e.at) AS taken "
                "FROM dispatches d JOIN procrastinate_events e ON e.job_id = d.queue_job_id AND e.type = 'started' "
                "WHERE d.name LIKE 'latency-%%' ORDER BY d.created_at"
            )
        finally:
            hosts.stop_all()
    claim, taken, started, ended, returned = [], [], [], [], []
    for call, row in zip(calls, rows, strict=True):
        launched = by_session[row["dispatched_session_id"]]
        claim.append(row["created_at"] - call["began"])
        taken.append(float(row["taken"]) - row["created_at"])
        started.append(launched - row["created_at"])
        ended.append(row["finished_at"] - row["created_at"])
        returned.append(call["returned"] - call["began"])
    print(f"3 workers x {args.slots} slots; {args.sequential} dispatches one after another:")
    print(summary("  call -> claim committed (validation, the claim, the job deferred)", claim))
    print(summary("  claim committed -> a worker took the job", taken))
    print(summary("  claim committed -> session started (its process running)", started))
    print(summary("  claim committed -> its end recorded (a session that answers at once)", ended))
    print(summary("  call -> outcome returned", returned))
    print(
        f"{args.burst} dispatches at once: all outcomes after {burst_seconds:.2f} s "
        f"({args.burst / burst_seconds:.1f} dispatches/s, each a session of the fake agent)"
    )


if __name__ == "__main__":
    main()
