"""Self-fencing against a real PostgreSQL: a worker cut off kills its sessions before its jobs can be taken over.

First the lease and the fence in this process, through a TCP proxy that stops forwarding without closing (a
hung network, not a refused one): the renewal's time stays the send time of the last one that got through,
the fence cuts before the lease can expire, and it is restored when renewals get through again. Then real
``expeditor worker`` processes on the fake agent: one worker cut off by that proxy while the other is not,
and both cut off by ``pg_ctl stop -m immediate`` on a server of the test's own.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import psutil
import psycopg
import pytest

pytest.importorskip("procrastinate")

from expeditor.errors import StaleAttempt
from expeditor.queue.fencing import SelfFence
from expeditor.queue.schema import migrate_queue
from expeditor.queue.tasks import defer_in_claim
from expeditor.state.models import Owner
from expeditor.state.postgres import PostgresCampaignStore
from tests.support.postgres import STORE_SCHEMA, PostgresServer
from tests.support.queue_hosts import QUEUE_TIMINGS, QueueHosts, queue_database_url, queue_hosts
from tests.support.tcp_proxy import TcpProxy, tcp_proxy

__all__ = ["queue_database_url", "queue_hosts"]  # the fixtures this module uses

INTERVAL = 0.25
TTL = 1.0  # budget 0.5 s (two intervals), margin 0.5 s


def through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@127.0.0.1:{proxy.port}"))


def leased_store(url: str) -> PostgresCampaignStore:
    store = PostgresCampaignStore(url, host_name="host-cut", lease_interval=INTERVAL, lease_ttl=TTL, timeout=2)
    store.claim("fence", "registers-the-lease", recipe="r", inputs={}, caller_session_id=None, owner=Owner.current())
    return store


@pytest.mark.anyio
async def test_a_hung_network_cuts_the_worker_off_before_its_lease_can_expire_and_renewals_restore_it(
    pg_database_url: str,
) -> None:
    with tcp_proxy("127.0.0.1", urlsplit(pg_database_url).port or 5432) as proxy:
        store = await anyio.to_thread.run_sync(leased_store, through(proxy, pg_database_url))
        cut, back = anyio.Event(), anyio.Event()
        reasons: list[str] = []
        cut_at: list[float] = []

        async def cut_off(reason: str) -> None:
            reasons.append(reason)
            cut_at.append(time.monotonic())
            cut.set()

        async def restored() -> None:
            back.set()

        fence = SelfFence(
            last_renewal=lambda: store.last_lease_renewal,
            lease_interval=INTERVAL,
            lease_ttl=TTL,
            cut_off=cut_off,
            restored=restored,
            worker="worker host-cut",
        )
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(fence.run)
                with anyio.fail_after(10):
                    while (store.last_lease_renewal or 0) < time.monotonic() - INTERVAL:  # renewing steadily
                        await anyio.sleep(0.02)
                last_through = store.last_lease_renewal
                assert last_through is not None
                proxy.pause()
                paused = time.monotonic()
                with anyio.fail_after(5):
                    await cut.wait()
                # The safety property: cut (the kill) before the lease, renewed at last_through at the
                # latest, can expire; and not before the budget (no renewal got through after the pause).
                assert cut_at[0] < last_through + TTL
                assert cut_at[0] >= paused + fence.budget - INTERVAL - 0.05
                assert store.last_lease_renewal is not None
                assert store.last_lease_renewal <= paused
                assert "worker host-cut was cut off from the store" in reasons[0]
                proxy.resume()
                resumed = time.monotonic()
                with anyio.fail_after(10):
                    await back.wait()
                assert store.last_lease_renewal is not None
                assert store.last_lease_renewal >= resumed - INTERVAL
                assert not fence.is_cut_off
                assert fence.cuts == 1
                group.cancel_scope.cancel()
        finally:
            proxy.resume()
            await anyio.to_thread.run_sync(store.close)


# --- real workers ------------------------------------------------------------------------------------------

HANGING = {"steps": [{"assistant": "Step 1 of 3 done."}, {"hang": True}]}
SCENARIO: dict[str, Any] = {"EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR": json.dumps(HANGING)}
STALL_THRESHOLD = float(QUEUE_TIMINGS["EXPEDITOR_LEASE_TTL"])
CAMPAIGN = "fencing"


def dispatch(hosts: QueueHosts, name: str) -> None:
    """Claim ``name`` as a queue-mode dispatcher on host "dispatcher" does (its job deferred in the claim)."""
    store = PostgresCampaignStore(hosts.url, host_name="dispatcher", lease_interval=0.5, lease_ttl=STALL_THRESHOLD)
    try:
        store.claim(
            CAMPAIGN,
            name,
            recipe="diagnose",
            inputs={"problem": "x"},
            caller_session_id=str(uuid.uuid4()),
            owner=Owner.current("dispatcher"),
            on_launch=defer_in_claim(queue="dispatches", cwd=str(hosts.root), stale_threshold=None),
        )
    finally:
        store.close()


def attempt_running(hosts: QueueHosts, name: str, attempt: int, host: str | None = None) -> dict[str, Any] | None:
    record = hosts.record(CAMPAIGN, name)
    if record is None or (record["status"], record["attempts"]) != ("running", attempt):
        return None
    return record if host is None or record["owner_host"] == host else None


def tagged_processes(session_id: str) -> list[int]:
    """Processes carrying ``session_id`` as their EXPEDITOR_SESSION_ID (a session's whole tree does)."""
    found: list[int] = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get("EXPEDITOR_SESSION_ID") == session_id:
                found.append(process.pid)
    return found


def write_of_attempt_1_refused(hosts: QueueHosts, name: str) -> None:
    """Any late write for attempt 1 (here: its end) is refused by the fence: the record is at attempt 2."""
    store = PostgresCampaignStore(hosts.url, host_name="late", lease_interval=0.5, lease_ttl=STALL_THRESHOLD)
    try:
        with pytest.raises(StaleAttempt, match="attempt 1 may not become failure"):
            store.mark_failed(CAMPAIGN, name, attempt=1, error="a late end")
    finally:
        store.close()


def test_a_worker_cut_off_by_a_silent_network_kills_its_session_first_and_the_other_host_wins(
    queue_hosts: QueueHosts,
) -> None:
    hosts = queue_hosts
    port = urlsplit(hosts.url).port or 5432
    with tcp_proxy("127.0.0.1", port) as proxy:
        cut = hosts.start("a", EXPEDITOR_STORE_URL=through(proxy, hosts.url), **SCENARIO)
        dispatch(hosts, "cut")
        other = hosts.start("b", wait=False, **SCENARIO)  # still starting when a takes the job
        first = hosts.wait_for("attempt 1 running on a", lambda: attempt_running(hosts, "cut", 1, "a"))
        session = str(first["dispatched_session_id"])
        hosts.wait_for("the orchestrator's process", lambda: tagged_processes(session))
        other.wait_ready()

        proxy.pause()
        paused = time.monotonic()
        hosts.wait_for("the cut-off session killed", lambda: not tagged_processes(session), interval=0.01)
        killed_after = time.monotonic() - paused
        assert killed_after < STALL_THRESHOLD, f"the session outlived the stall threshold: {killed_after:.2f} s"
        assert "the worker on a was cut off from the store" in cut.text()

        second = hosts.wait_for("attempt 2 running on b", lambda: attempt_running(hosts, "cut", 2, "b"))
        proxy.resume()
        cut.wait_for_line("late end of fencing/cut was refused")
        now = hosts.record(CAMPAIGN, "cut")
        assert now is not None
        assert (now["status"], now["attempts"], now["owner_host"]) == ("running", 2, "b")
        assert now["dispatched_session_id"] == second["dispatched_session_id"]
        write_of_attempt_1_refused(hosts, "cut")
        cut.wait_for_line("reached the store again")
        hosts.stop_all()  # while the proxy still forwards: a stopping worker gives its lease up


def test_workers_that_lose_the_database_kill_their_sessions_before_the_stall_threshold_and_a_newer_attempt_wins(
    private_postgres_server: PostgresServer, tmp_path: Path
) -> None:
    server = private_postgres_server
    url = server.url(server.create_database("fencing"))
    with psycopg.connect(url) as connection:
        migrate_queue(connection, STORE_SCHEMA)
    hosts = QueueHosts(url=url, root=tmp_path)
    try:
        workers = {host: hosts.start(host, wait=False, **SCENARIO) for host in ("a", "b")}
        for worker in workers.values():
            worker.wait_ready()
        dispatch(hosts, "lost")
        first = hosts.wait_for("attempt 1 running", lambda: attempt_running(hosts, "lost", 1))
        session = str(first["dispatched_session_id"])
        hosts.wait_for("the orchestrator's process", lambda: tagged_processes(session))

        server.stop()
        stopped = time.monotonic()
        hosts.wait_for("the session killed", lambda: not tagged_processes(session), interval=0.01)
        killed_after = time.monotonic() - stopped
        assert killed_after < STALL_THRESHOLD, f"the session outlived the stall threshold: {killed_after:.2f} s"
        ran_it = workers[first["owner_host"]]
        assert f"the worker on {ran_it.host} was cut off from the store" in ran_it.text()

        server.start()
        hosts.wait_for("attempt 2 running", lambda: attempt_running(hosts, "lost", 2), timeout=30)
        write_of_attempt_1_refused(hosts, "lost")
        # Attempt 1's session ended by its own worker's cut (its reason says so), or, when another host took the
        # attempt over before that worker reached the store again, closed as its owner's.
        (run,) = hosts.rows("SELECT status, reason FROM runs WHERE run_id = %s AND attempt = 1", (session,))
        assert (run["status"], "cut off from the store" in run["reason"]) in (
            ("cancelled", True),
            ("interrupted", False),
        )
    finally:
        hosts.stop_all()


def test_a_worker_whose_lease_is_too_short_to_fence_in_time_is_refused_with_one_line(
    queue_hosts: QueueHosts,
) -> None:
    refused = queue_hosts.expeditor(
        "worker", "--host-name", "short", EXPEDITOR_LEASE_INTERVAL="1", EXPEDITOR_LEASE_TTL="2.5"
    )
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "lease_ttl (2.5 s) must be at least three times lease_interval (1 s) for a worker" in lines[0]
