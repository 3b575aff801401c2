"""Cancel across processes: from the cancel on one host to the session's tree gone and its record cancelled on another.

Two workers, each its own host; the fake agent's orchestrator writes a step and hangs. Each run dispatches
one job, waits for its session's process, then cancels it from this process, another host
(``queue.cancel.cancel_dispatch``: the record read, the queue's abort, the wait for the worker's record)
and measures until the call returned with the record ``cancelled`` and until no process of the session is
left. Then the same through ``expeditor cancel`` as a process of its own (its interpreter's start included).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
from tests.support.queue_hosts import QueueHosts

from bench._common import temp_root
from bench._queue import HANGING, clocks, defer_dispatch, queue_database, summary, wait_until
from expeditor.config import load_settings
from expeditor.queue.cancel import cancel_dispatch, queue_aborter
from expeditor.state.postgres import PostgresCampaignStore

CAMPAIGN = "cancelling"


def tagged(session_id: str) -> bool:
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get("EXPEDITOR_SESSION_ID") == session_id:
                return True
    return False


def gone(session_id: str) -> bool:
    return not tagged(session_id)


def running_session(hosts: QueueHosts, name: str) -> str | None:
    record = hosts.record(CAMPAIGN, name)
    if record is None or record["status"] != "running":
        return None
    return str(record["dispatched_session_id"])


def started(hosts: QueueHosts, store: PostgresCampaignStore, name: str) -> str:
    defer_dispatch(store, hosts, CAMPAIGN, name)
    session = wait_until("the job running", functools.partial(running_session, hosts, name), timeout=60)
    wait_until("its orchestrator", functools.partial(tagged, session), timeout=30)
    return str(session)


async def in_process(hosts: QueueHosts, store: PostgresCampaignStore, runs: int) -> tuple[list[float], list[float]]:
    settings = load_settings(home=hosts.home("canceller"), store_url=hosts.url, host_name="canceller")
    recorded: list[float] = []
    dead: list[float] = []
    async with queue_aborter(settings) as abort_job:
        for number in range(runs):
            name = f"in-process-{number}"
            session = await anyio.to_thread.run_sync(started, hosts, store, name)
            began = time.monotonic()
            outcome = await cancel_dispatch(store, abort_job, CAMPAIGN, name, reason="bench", wait=10)
            recorded.append(time.monotonic() - began)
            assert outcome.cancelled, outcome.message
            await anyio.to_thread.run_sync(
                lambda session=session: wait_until("the tree gone", functools.partial(gone, session), timeout=30)
            )
            dead.append(time.monotonic() - began)
    return recorded, dead


def by_command(hosts: QueueHosts, store: PostgresCampaignStore, runs: int) -> tuple[list[float], list[float]]:
    finished: list[float] = []
    dead: list[float] = []
    for number in range(runs):
        name = f"command-{number}"
        session = started(hosts, store, name)
        began = time.monotonic()
        done = hosts.expeditor("cancel", CAMPAIGN, name, host="canceller")
        finished.append(time.monotonic() - began)
        assert done.returncode == 0, done.stdout + done.stderr
        wait_until("the tree gone", functools.partial(gone, session), timeout=30)
        dead.append(time.monotonic() - began)
        record = hosts.record(CAMPAIGN, name)
        assert record is not None
        assert record["status"] == "cancelled"
    return finished, dead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    settings: dict[str, Any] = clocks(1.0, 3.0, 0.5, EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR=json.dumps(HANGING))
    with queue_database() as database, temp_root() as tmp:
        hosts = QueueHosts(url=database.url, root=Path(tmp))
        store = PostgresCampaignStore(database.url, host_name="dispatcher", lease_interval=1, lease_ttl=3)
        try:
            for host in ("a", "b"):
                hosts.start(host, wait=False, **settings)
            for worker in hosts.workers:
                worker.wait_ready()
            recorded, dead = anyio.run(in_process, hosts, store, args.runs, backend="asyncio")
            command, command_dead = by_command(hosts, store, max(1, args.runs // 2))
        finally:
            store.close()
            hosts.stop_all()
    print(f"cancel from another process, a running job on another worker ({args.runs} runs):")
    print(summary("  cancel_dispatch -> returned with the record cancelled", recorded))
    print(summary("  cancel_dispatch -> no process of the session left", dead))
    print(summary("  `expeditor cancel` process, start -> exit (its interpreter included)", command))
    print(summary("  `expeditor cancel` process start -> no process of the session left", command_dead))


if __name__ == "__main__":
    main()
