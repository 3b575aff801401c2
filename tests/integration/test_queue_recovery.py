"""Stall recovery against a real PostgreSQL and procrastinate: a silent worker's job runs again elsewhere, once.

The first half drives ``recover_once`` in this process on jobs made stalled by hand (a procrastinate worker
row whose heartbeat is an hour old holds them ``doing``), one record state at a time. The second half runs
real ``expeditor worker`` processes on the fake agent: one is SIGKILLed mid-run, and a pending record's job
row is deleted.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, LiteralString

import psutil
import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.queue_hosts import (
    QUEUE_TIMINGS,
    QueueHosts,
    queue_database_url,
    queue_hosts,
    require_procrastinate,
)

require_procrastinate()

from procrastinate import App  # noqa: E402

from expeditor.claude_paths import transcript_path  # noqa: E402
from expeditor.config import Settings, load_settings  # noqa: E402
from expeditor.queue.app import open_app  # noqa: E402
from expeditor.queue.recovery import LOCK_CLASS, recover_once, recovery_lock_key  # noqa: E402
from expeditor.queue.tasks import defer_in_claim  # noqa: E402
from expeditor.state import DispatchStatus, Owner  # noqa: E402
from expeditor.state.postgres import PostgresCampaignStore  # noqa: E402
from tests.support.postgres import STORE_SCHEMA  # noqa: E402

__all__ = ["queue_database_url", "queue_hosts"]  # the fixtures this module uses

pytestmark = pytest.mark.anyio

LEASE_INTERVAL = 0.25
LEASE_TTL = 0.75
CAMPAIGN = "recovery"
DEAD = Owner(pid=4_000_000, start_time=1.0, host="host-dead")  # a worker on another host whose lease is gone
QUEUE = "recovery-tests"  # not the default queue: a fresh job keeps its predecessor's


# --- one recovery round, in this process ------------------------------------------------------------


def sql_rows(url: str, query: LiteralString, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"SET search_path TO {STORE_SCHEMA}")
        cursor = connection.cursor(row_factory=dict_row).execute(query, params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def settings(tmp_path: Path, queue_database_url: str) -> Settings:
    return load_settings(
        home=tmp_path / "home",
        store_url=queue_database_url,
        lease_interval=LEASE_INTERVAL,
        lease_ttl=LEASE_TTL,
        store_schema=STORE_SCHEMA,
    )


@pytest.fixture
def store(queue_database_url: str) -> Iterator[PostgresCampaignStore]:
    sql_rows(queue_database_url, "TRUNCATE procrastinate_jobs, procrastinate_workers, dispatches, runs, owners CASCADE")
    made = PostgresCampaignStore(
        queue_database_url, host_name="host-recovering", lease_interval=LEASE_INTERVAL, lease_ttl=LEASE_TTL
    )
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[App]:
    async with open_app(settings, queue=QUEUE, connections=4) as opened:
        yield opened


def claimed(store: PostgresCampaignStore, name: str, owner: Owner) -> None:
    """A record of ``name`` at attempt 1 with its job deferred in the claim, as a queue-mode dispatcher leaves it."""
    store.claim(
        CAMPAIGN,
        name,
        recipe="diagnose",
        inputs={"problem": name},
        caller_session_id=None,
        owner=owner,
        on_launch=defer_in_claim(queue=QUEUE, cwd="/work", stale_threshold=None),
    )


async def stall(app: App, url: str) -> int:
    """Fetch the waiting job as a worker would, then silence that worker: the job's id, now stalled."""
    worker_id = await app.job_manager.register_worker()
    job = await app.job_manager.fetch_job(queues=None, worker_id=worker_id)
    assert job is not None
    assert job.id is not None
    sql_rows(
        url, "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' WHERE id = %s", (worker_id,)
    )
    return job.id


def job_status(url: str, job_id: int) -> str | None:
    found = sql_rows(url, "SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,))
    return None if not found else str(found[0]["status"])


def running_under(store: PostgresCampaignStore, name: str, owner: Owner, session: str) -> None:
    store.mark_running(CAMPAIGN, name, attempt=1, dispatched_session_id=session, owner=owner)


async def test_a_running_attempt_whose_owner_lease_expired_is_interrupted_and_runs_again_under_a_fresh_job(
    app: App,
    store: PostgresCampaignStore,
    settings: Settings,
    queue_database_url: str,
) -> None:
    claimed(store, "taken-over", DEAD)
    job_id = await stall(app, queue_database_url)
    running_under(store, "taken-over", DEAD, "session-1")

    done = await recover_once(app, store, settings, me=Owner.current("host-recovering"))

    assert done.taken_over == [f"{CAMPAIGN}/taken-over"]
    record = store.get(CAMPAIGN, "taken-over")
    assert record is not None
    assert (record.status, record.attempts) == (DispatchStatus.PENDING, 2)
    assert record.owner is not None
    assert record.owner.host == "host-recovering"
    assert record.resume_session_id == "session-1"  # the next attempt resumes the interrupted session
    assert record.cwd == "/work"
    # The stalled job is finished (a late finish_job by its worker can end nothing else); a fresh one waits.
    assert job_status(queue_database_url, job_id) == "failed"
    assert record.queue_job_id not in (None, job_id)
    assert record.queue_job_id is not None
    assert job_status(queue_database_url, record.queue_job_id) == "todo"


async def test_a_stalled_job_whose_owner_lease_is_alive_is_left_to_its_owner(
    app: App,
    store: PostgresCampaignStore,
    settings: Settings,
    queue_database_url: str,
) -> None:
    alive = Owner.current("host-recovering")  # this process: its lease is renewed
    claimed(store, "owner-alive", alive)
    job_id = await stall(app, queue_database_url)
    running_under(store, "owner-alive", alive, "session-1")

    done = await recover_once(app, store, settings, me=alive)

    assert done.left == [f"{CAMPAIGN}/owner-alive"]
    assert not done.taken_over
    record = store.get(CAMPAIGN, "owner-alive")
    assert record is not None
    assert (record.status, record.attempts) == (DispatchStatus.RUNNING, 1)
    assert job_status(queue_database_url, job_id) == "doing"


async def test_a_pending_record_whose_job_stalled_gets_a_fresh_job_for_the_same_attempt(
    app: App,
    store: PostgresCampaignStore,
    settings: Settings,
    queue_database_url: str,
) -> None:
    claimed(store, "pending", DEAD)
    job_id = await stall(app, queue_database_url)

    done = await recover_once(app, store, settings, me=Owner.current("host-recovering"))

    assert done.finished == [f"{CAMPAIGN}/pending"]
    assert done.redeferred == [f"{CAMPAIGN}/pending"]
    record = store.get(CAMPAIGN, "pending")
    assert record is not None
    assert (record.status, record.attempts) == (DispatchStatus.PENDING, 1)
    assert job_status(queue_database_url, job_id) == "failed"
    assert record.queue_job_id is not None
    assert job_status(queue_database_url, record.queue_job_id) == "todo"
    (fresh,) = sql_rows(
        queue_database_url, "SELECT queue_name FROM procrastinate_jobs WHERE id = %s", (record.queue_job_id,)
    )
    assert fresh["queue_name"] == QUEUE  # the queue its first job was in


async def test_a_stalled_job_whose_record_ended_or_is_gone_is_finished_and_nothing_runs_again(
    app: App,
    store: PostgresCampaignStore,
    settings: Settings,
    queue_database_url: str,
) -> None:
    claimed(store, "ended", DEAD)
    ended_job = await stall(app, queue_database_url)
    running_under(store, "ended", DEAD, "session-1")
    store.mark_succeeded(CAMPAIGN, "ended", attempt=1, summary="done")
    claimed(store, "deleted", DEAD)
    deleted_job = await stall(app, queue_database_url)
    sql_rows(queue_database_url, "DELETE FROM dispatches WHERE name = 'deleted'")

    done = await recover_once(app, store, settings, me=Owner.current("host-recovering"))

    assert sorted(done.finished) == [f"{CAMPAIGN}/deleted", f"{CAMPAIGN}/ended"]
    assert not done.redeferred
    assert job_status(queue_database_url, ended_job) == "succeeded"
    assert job_status(queue_database_url, deleted_job) == "failed"
    record = store.get(CAMPAIGN, "ended")
    assert record is not None
    assert (record.status, record.attempts) == (DispatchStatus.SUCCESS, 1)
    assert sql_rows(queue_database_url, "SELECT id FROM procrastinate_jobs WHERE status IN ('todo', 'doing')") == []


async def test_a_pending_record_whose_job_row_is_gone_is_deferred_again_once(
    app: App,
    store: PostgresCampaignStore,
    settings: Settings,
    queue_database_url: str,
) -> None:
    claimed(store, "lost-job", DEAD)
    record = store.get(CAMPAIGN, "lost-job")
    assert record is not None
    assert record.queue_job_id is not None
    sql_rows(queue_database_url, "DELETE FROM procrastinate_jobs WHERE id = %s", (record.queue_job_id,))

    done = await recover_once(app, store, settings, me=Owner.current("host-recovering"))
    again = await recover_once(app, store, settings, me=Owner.current("host-recovering"))

    assert done.redeferred == [f"{CAMPAIGN}/lost-job"]
    assert again.redeferred == []
    now = store.get(CAMPAIGN, "lost-job")
    assert now is not None
    assert now.queue_job_id not in (None, record.queue_job_id)
    jobs = sql_rows(
        queue_database_url, "SELECT id, status, lock, queueing_lock, queue_name, args FROM procrastinate_jobs"
    )
    assert jobs == [
        {
            "id": now.queue_job_id,
            "status": "todo",
            "lock": f"{CAMPAIGN}/lost-job",
            "queueing_lock": f"{CAMPAIGN}/lost-job",
            "queue_name": settings.dispatch_queue,
            "args": {"campaign": CAMPAIGN, "name": "lost-job", "dispatch_id": record.dispatch_id},
        }
    ]


async def test_one_worker_recovers_at_a_time(
    app: App,
    store: PostgresCampaignStore,
    settings: Settings,
    queue_database_url: str,
) -> None:
    claimed(store, "held", DEAD)
    job_id = await stall(app, queue_database_url)
    with psycopg.connect(queue_database_url) as other:  # another worker's round, in progress
        other.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, recovery_lock_key(settings)))
        done = await recover_once(app, store, settings, me=Owner.current("host-recovering"))
        assert done.skipped
        assert not done.finished
        assert job_status(queue_database_url, job_id) == "doing"
    done = await recover_once(app, store, settings, me=Owner.current("host-recovering"))
    assert done.finished == [f"{CAMPAIGN}/held"]


# --- real workers ------------------------------------------------------------------------------------------

HANGING = {"steps": [{"assistant": "Step 1 of 3 done."}, {"hang": True}]}
STALL_THRESHOLD = float(QUEUE_TIMINGS["EXPEDITOR_LEASE_TTL"])
STALL_CHECK = float(QUEUE_TIMINGS["EXPEDITOR_STALL_CHECK_INTERVAL"])


@pytest.fixture
def dispatcher(queue_hosts: QueueHosts) -> Iterator[PostgresCampaignStore]:
    """This process as a queue-mode dispatcher on host "dispatcher": its claims defer jobs (no waiting call)."""
    store = PostgresCampaignStore(
        queue_hosts.url, host_name="dispatcher", lease_interval=LEASE_INTERVAL, lease_ttl=LEASE_TTL
    )
    try:
        yield store
    finally:
        store.close()


def dispatch(store: PostgresCampaignStore, hosts: QueueHosts, name: str) -> None:
    """Claim ``name`` as ``expeditor dispatch`` in queue mode does, from a caller (so markers name it)."""
    store.claim(
        CAMPAIGN,
        name,
        recipe="diagnose",
        inputs={"problem": "x"},
        caller_session_id=str(uuid.uuid4()),
        owner=Owner.current("dispatcher"),
        on_launch=defer_in_claim(queue="dispatches", cwd=str(hosts.root), stale_threshold=None),
    )


def attempt_running(hosts: QueueHosts, name: str, *, host: str, attempt: int) -> dict[str, Any] | None:
    record = hosts.record(CAMPAIGN, name)
    wanted = (DispatchStatus.RUNNING.value, host, attempt)
    if record is None or (record["status"], record["owner_host"], record["attempts"]) != wanted:
        return None
    return record


def tagged_processes(session_id: str, *, home: Path | None = None) -> list[int]:
    """Processes carrying ``session_id`` as their EXPEDITOR_SESSION_ID (a session's whole tree does); with
    ``home``, only those launched on that host (a resumed session keeps its id on the host that resumes it)."""
    found: list[int] = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            environ = process.environ()
            if environ.get("EXPEDITOR_SESSION_ID") == session_id and (
                home is None or environ.get("EXPEDITOR_HOME") == str(home)
            ):
                found.append(process.pid)
    return found


def stored_transcript(hosts: QueueHosts, session_id: str) -> bytes:
    """The session's transcript as the store holds it (issue 27, item 8): its pieces, in order."""
    pieces = hosts.rows("SELECT data FROM transcripts WHERE session_id = %s ORDER BY byte_offset", (session_id,))
    return b"".join(zlib.decompress(bytes(piece["data"])) for piece in pieces)


def running_anywhere(hosts: QueueHosts, name: str, *, attempt: int) -> dict[str, Any] | None:
    record = hosts.record(CAMPAIGN, name)
    if record is None or (record["status"], record["attempts"]) != (DispatchStatus.RUNNING.value, attempt):
        return None
    return record


def test_a_worker_killed_mid_run_has_its_job_running_on_another_host_within_the_stall_threshold_plus_2s(
    queue_hosts: QueueHosts,
    dispatcher: PostgresCampaignStore,
) -> None:
    hosts = queue_hosts
    scenario: dict[str, Any] = {"EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR": json.dumps(HANGING)}
    workers = {host: hosts.start(host, wait=False, **scenario) for host in ("a", "b")}
    for worker in workers.values():
        worker.wait_ready()
    dispatch(dispatcher, hosts, "killed")
    first = hosts.wait_for("attempt 1 running", lambda: running_anywhere(hosts, "killed", attempt=1))
    session = str(first["dispatched_session_id"])
    doomed = workers[first["owner_host"]]
    survivor = "b" if doomed.host == "a" else "a"
    hosts.wait_for("the orchestrator's process", lambda: tagged_processes(session))
    registry_entry = doomed.home / "sessions" / f"{session}.json"
    markers = doomed.home / "markers"
    assert registry_entry.is_file()
    assert list(markers.glob("*.marker"))

    # Resume across hosts (item 8): the session's transcript is in the store before its host dies.
    hosts.wait_for("the transcript checkpointed", lambda: stored_transcript(hosts, session))
    killed = time.monotonic()
    doomed.kill_group()
    second = hosts.wait_for(
        f"attempt 2 running on {survivor}",
        lambda: attempt_running(hosts, "killed", host=survivor, attempt=2),
        timeout=30,
    )
    took = time.monotonic() - killed
    assert took < STALL_THRESHOLD + 2.0, f"the job ran elsewhere {took:.2f} s after its worker died"

    # The session's first launch is the interrupted one; a resumed session's next launch is launch 2 (recorded
    # as its session starts, a moment after the record says running: awaited, not assumed).
    def both_launches() -> list[dict[str, Any]] | None:
        rows = hosts.rows("SELECT status, reason FROM runs WHERE run_id = %s ORDER BY launch", (session,))
        return rows if len(rows) > 1 else None

    run, *resumed_runs = hosts.wait_for("launch 2 recorded", both_launches)
    assert run["status"] == "interrupted"
    assert f"on {doomed.host}" in run["reason"]
    assert [later["status"] for later in resumed_runs] == ["running"]
    assert second["resume_session_id"] == session  # attempt 2 resumes attempt 1's session
    # ... with --resume, from the stored transcript written to the survivor's own path for the cwd.
    assert second["dispatched_session_id"] == session
    [resumed] = hosts.wait_for(
        "the resumed launch", lambda: [entry for entry in hosts.launches(session) if "--resume" in entry["argv"]]
    )
    assert resumed["argv"][resumed["argv"].index("--resume") + 1] == session
    copied = transcript_path(workers[survivor].claude_dir, hosts.root, session)
    assert copied.read_bytes().startswith(stored_transcript(hosts, session))
    hosts.wait_for(
        "no process of the killed session", lambda: not tagged_processes(session, home=doomed.home), timeout=10
    )

    hosts.restart(doomed)
    hosts.wait_for(
        "the killed worker's leftovers removed",
        lambda: not registry_entry.exists() and not list(markers.glob("*.marker")),
    )


def test_a_pending_record_whose_job_row_was_deleted_gets_a_new_job_within_one_reconcile_interval(
    queue_hosts: QueueHosts,
    dispatcher: PostgresCampaignStore,
) -> None:
    hosts = queue_hosts
    hosts.start("a", slots=1, EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR=json.dumps(HANGING))
    dispatch(dispatcher, hosts, "busy")
    dispatch(dispatcher, hosts, "waiting")  # one slot: "waiting" stays pending
    hosts.wait_for("one running, one waiting", lambda: waiting_behind_running(hosts))
    record = hosts.record(CAMPAIGN, "waiting")
    assert record is not None
    lost = record["queue_job_id"]
    assert hosts.execute("DELETE FROM procrastinate_jobs WHERE id = %s", (lost,)) == 1
    deleted = time.monotonic()
    fresh = hosts.wait_for("a new job for the pending record", lambda: new_waiting_job(hosts, "waiting", lost))
    took = time.monotonic() - deleted
    assert took < STALL_CHECK + 0.5, f"re-deferred {took:.2f} s after its job row was deleted"
    assert fresh["status"] == "todo"
    assert fresh["args"] == {"campaign": CAMPAIGN, "name": "waiting", "dispatch_id": record["dispatch_id"]}
    again = hosts.record(CAMPAIGN, "waiting")
    assert again is not None
    assert (again["status"], again["attempts"]) == ("pending", 1)  # the same attempt, not a new one


def waiting_behind_running(hosts: QueueHosts) -> bool:
    busy, waiting = hosts.record(CAMPAIGN, "busy"), hosts.record(CAMPAIGN, "waiting")
    return (
        busy is not None
        and busy["status"] == "running"
        and waiting is not None
        and waiting["status"] == "pending"
        and waiting["queue_job_id"] is not None
    )


def new_waiting_job(hosts: QueueHosts, name: str, lost: int) -> dict[str, Any] | None:
    record = hosts.record(CAMPAIGN, name)
    if record is None or record["queue_job_id"] in (None, lost):
        return None
    (job,) = hosts.rows("SELECT status, args FROM procrastinate_jobs WHERE id = %s", (record["queue_job_id"],))
    return job
