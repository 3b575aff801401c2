"""``expeditor status`` with a PostgreSQL store (issue 27, item 7): the hosts sharing it (worker leases with
slots, slots in use and heartbeat age), the jobs waiting, and the dispatches per host; the sessions table and
``list_sessions`` stay this host's registry.

Real ``expeditor worker`` processes on the fake agent and a real PostgreSQL (``tests.support.queue_hosts``).
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from expeditor.config import load_settings
from expeditor.status import StatusSnapshot, show_status
from tests.support.queue_hosts import QUEUE_TIMINGS, QueueHosts, queue_database_url, queue_hosts, require_procrastinate  # noqa: F401

require_procrastinate()

CAMPAIGN = "status"
LONG = json.dumps({"steps": [{"assistant": "working on it"}, {"sleep": 60}, {"result": {}}]})


@pytest.fixture
def dispatchers() -> Iterator[list[subprocess.Popen[str]]]:
    """Background ``expeditor dispatch`` processes, killed at the end (their jobs belong to the workers)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.kill()
        process.wait(timeout=10)


def dispatch(hosts: QueueHosts, name: str) -> subprocess.Popen[str]:
    argv = hosts.expeditor_argv(
        "dispatch", CAMPAIGN, name, "--recipe", "diagnose", "--input", "problem=x", "--cwd", str(hosts.root)
    )
    return subprocess.Popen(
        argv,
        env=hosts.env("dispatcher"),
        cwd=hosts.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def status_of(hosts: QueueHosts, *, as_json: bool) -> str:
    """``expeditor status`` as a process on host "observer" would print it."""
    settings = load_settings(
        home=hosts.home("observer"),
        store_url=hosts.url,
        host_name="observer",
        lease_interval=float(QUEUE_TIMINGS["EXPEDITOR_LEASE_INTERVAL"]),
        lease_ttl=float(QUEUE_TIMINGS["EXPEDITOR_LEASE_TTL"]),
    )
    out, err = io.StringIO(), io.StringIO()
    assert show_status(settings, campaign=None, watch=False, interval=1, as_json=as_json, out=out, err=err) == 0
    return out.getvalue()


def test_status_shows_each_worker_with_its_slots_in_use_the_waiting_jobs_and_the_dispatches_per_host(
    queue_hosts: QueueHosts,  # noqa: F811
    dispatchers: list[subprocess.Popen[str]],
) -> None:
    hosts = queue_hosts
    hosts.start("a", slots=1, EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR=LONG)
    dispatchers += [dispatch(hosts, "first"), dispatch(hosts, "second")]

    def one_running_one_waiting() -> dict[str, Any] | None:
        records = hosts.rows("SELECT status, queue_job_id FROM dispatches WHERE campaign_id = %s", (CAMPAIGN,))
        statuses = sorted(row["status"] for row in records)
        return (
            {"records": records}
            if statuses == ["pending", "running"] and all(row["queue_job_id"] for row in records)
            else None
        )

    hosts.wait_for("one job running on host a and one waiting", one_running_one_waiting)

    snapshot = StatusSnapshot.model_validate_json(status_of(hosts, as_json=True))
    text = status_of(hosts, as_json=False)

    assert snapshot.cluster is not None, snapshot.cluster_error
    [worker] = [lease for lease in snapshot.cluster.hosts if lease.kind == "worker"]
    assert (worker.host, worker.slots, worker.in_use, worker.alive) == ("a", 1, 1, True)
    assert worker.heartbeat_age_s <= float(QUEUE_TIMINGS["EXPEDITOR_LEASE_TTL"])
    assert snapshot.cluster.jobs_waiting == 1
    assert snapshot.cluster.dispatches_by_host["a"] == {"running": 1}
    assert sum(snapshot.cluster.dispatches_by_host.get("dispatcher", {}).values()) == 1  # its claim, waiting
    assert snapshot.sessions == []  # the session runs on host a: this host's registry has none
    assert "Hosts of" in text
    assert "(1 job waiting)" in " ".join(text.split())
    [row] = [line for line in text.splitlines() if "worker" in line and " a " in line]
    assert "running 1" in row


def test_status_of_a_store_without_workers_or_queue_says_so(queue_hosts: QueueHosts) -> None:  # noqa: F811
    snapshot = StatusSnapshot.model_validate_json(status_of(queue_hosts, as_json=True))

    assert snapshot.cluster is not None, snapshot.cluster_error
    assert [lease for lease in snapshot.cluster.hosts if lease.kind == "worker"] == []
    assert snapshot.cluster.jobs_waiting == 0
    assert snapshot.cluster.dispatches_by_host == {}
