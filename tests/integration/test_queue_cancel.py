"""Cancel across hosts (issue 27, item 6): ``expeditor cancel`` from another process stops a queued dispatch
wherever it runs, or before it runs; a session of another host that is not a queued dispatch is refused.

Real ``expeditor worker`` processes on the fake agent and a real PostgreSQL (``tests.support.queue_hosts``).
"""

from __future__ import annotations

import io
import json
import subprocess
import time
import uuid
from typing import Any

import anyio
import psutil
import pytest
from mcp import Client

from expeditor.config import load_settings
from expeditor.errors import InvalidInput, Unusable
from expeditor.executor import SessionKind
from expeditor.queue.cancel import cancel_command
from expeditor.server.app import build_server
from expeditor.state import Owner, RunRecord
from expeditor.state.postgres import PostgresCampaignStore
from expeditor.testing import read_invocation_log
from tests.support.fake import FAKE_AGENT_COMMAND
from tests.support.queue_hosts import QueueHosts, queue_database_url, queue_hosts, require_procrastinate  # noqa: F401

require_procrastinate()

CAMPAIGN = "cancel"
# An orchestrator that says something (its transcript exists) and then works for a minute.
LONG = json.dumps({"steps": [{"assistant": "working on it"}, {"sleep": 60}, {"result": {}}]})
QUICK = json.dumps({"steps": [{"assistant": "done"}, {"result": {}}]})
WITHIN = 1.0  # seconds from the abort request to the record saying cancelled, the tree being dead


def dispatch_in_background(hosts: QueueHosts, name: str, *, caller: str) -> subprocess.Popen[str]:
    """``expeditor dispatch`` of ``name`` from the host "dispatcher", waiting for its outcome."""
    argv = hosts.expeditor_argv(
        "dispatch", CAMPAIGN, name, "--recipe", "diagnose", "--input", "problem=x", "--cwd", str(hosts.root), "--json"
    )
    return subprocess.Popen(
        argv,
        env={**hosts.env("dispatcher"), "CLAUDE_CODE_SESSION_ID": caller},
        cwd=hosts.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def record_in(hosts: QueueHosts, name: str, *statuses: str) -> dict[str, Any] | None:
    record = hosts.record(CAMPAIGN, name)
    return record if record is not None and record["status"] in statuses else None


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def carrying(session_id: str) -> list[int]:
    """Processes whose environment tags them as the session's."""
    found: list[int] = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("EXPEDITOR_SESSION_ID") == session_id:
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def abort_requested_at(hosts: QueueHosts, job_id: int) -> float:
    [row] = hosts.rows(
        "SELECT extract(epoch FROM at)::float8 AS at FROM procrastinate_events "
        "WHERE job_id = %s AND type = 'abort_requested'",
        (job_id,),
    )
    return float(row["at"])


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=30)
    return process.returncode, out, err


def in_process_cancel(hosts: QueueHosts, *args: str | None, session: str | None = None) -> tuple[int, str]:
    """``expeditor cancel`` run in this process, as host "canceller" (another process is the first test's)."""
    settings = load_settings(
        home=hosts.home("canceller"),
        store_url=hosts.url,
        host_name="canceller",
        kill_grace=0.5,
        store_timeout=3,
    )
    out = io.StringIO()
    campaign, name = (*args, None, None)[:2]
    code = cancel_command(settings, campaign, name, session=session, out=out)
    return code, out.getvalue()


def test_expeditor_cancel_from_another_process_kills_a_running_job_on_its_worker_within_a_second(
    queue_hosts: QueueHosts,  # noqa: F811
) -> None:
    hosts = queue_hosts
    worker = hosts.start("a", EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR=LONG)
    by_name = dispatch_in_background(hosts, "by-name", caller=str(uuid.uuid4()))
    by_session = dispatch_in_background(hosts, "by-session", caller=str(uuid.uuid4()))
    running = hosts.wait_for("the job running on host a", lambda: record_in(hosts, "by-name", "running"))
    session_id = running["dispatched_session_id"]
    [launch] = hosts.wait_for("the orchestrator's launch", lambda: hosts.launches(session_id))
    other = hosts.wait_for("the second job running", lambda: record_in(hosts, "by-session", "running"))
    markers = worker.home / "markers"
    assert alive(launch["pid"])

    cancel = hosts.expeditor("cancel", CAMPAIGN, "by-name", host="canceller")

    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    assert "was stopped on host a" in cancel.stdout
    final = hosts.record(CAMPAIGN, "by-name")
    assert final is not None
    assert final["status"] == "cancelled"
    assert final["finished_at"] - abort_requested_at(hosts, running["queue_job_id"]) < WITHIN
    assert not alive(launch["pid"])
    assert carrying(session_id) == []
    [job] = hosts.rows("SELECT status FROM procrastinate_jobs WHERE id = %s", (running["queue_job_id"],))
    assert job["status"] == "aborted"
    code, out, err = finish(by_name)
    assert code == 1, err
    assert json.loads(out)["status"] == "cancelled"

    # The other job, by its session id; then nothing of either is left on host a.
    assert in_process_cancel(hosts, session=other["dispatched_session_id"])[0] == 0
    assert finish(by_session)[0] == 1
    again = hosts.record(CAMPAIGN, "by-session")
    assert again is not None
    assert again["status"] == "cancelled"
    assert not markers.is_dir() or list(markers.glob("*.marker")) == []
    assert list((worker.home / "sessions").glob("*.json")) == []


def test_a_waiting_job_is_cancelled_by_the_canceller_and_never_launched(queue_hosts: QueueHosts) -> None:  # noqa: F811
    hosts = queue_hosts
    dispatcher = dispatch_in_background(hosts, "waiting", caller=str(uuid.uuid4()))
    pending = hosts.wait_for(
        "the job waiting for a worker",
        lambda: (found := record_in(hosts, "waiting", "pending")) and found["queue_job_id"] and found,
    )

    code, said = in_process_cancel(hosts, CAMPAIGN, "waiting")

    assert code == 0
    assert "was waiting for a worker" in said
    final = hosts.record(CAMPAIGN, "waiting")
    assert final is not None
    assert (final["status"], final["attempts"]) == ("cancelled", pending["attempts"])
    [job] = hosts.rows("SELECT status FROM procrastinate_jobs WHERE id = %s", (pending["queue_job_id"],))
    assert job["status"] == "cancelled"
    code, out, _ = finish(dispatcher)
    assert (code, json.loads(out)["status"]) == (1, "cancelled")
    # A worker that starts now runs the next job, and never the cancelled one.
    hosts.start("a", EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR=QUICK)
    after = hosts.expeditor(
        "dispatch", CAMPAIGN, "after", "--recipe", "diagnose", "--input", "problem=y", "--cwd", str(hosts.root)
    )
    assert after.returncode == 0, after.stdout + after.stderr
    launched = [entry for entry in read_invocation_log(hosts.agent_log) if entry.get("event") == "launch"]
    assert len(launched) == 1  # "after"'s
    assert hosts.record(CAMPAIGN, "waiting") == final


def test_what_is_not_a_live_queued_dispatch_is_refused_with_what_it_is(queue_hosts: QueueHosts) -> None:  # noqa: F811
    hosts = queue_hosts
    elsewhere = Owner(host="build-7", pid=4242, start_time=1.5)
    store = PostgresCampaignStore(hosts.url, host_name="canceller")
    try:
        run_skill = store.record_run_started(
            RunRecord(run_id=str(uuid.uuid4()), kind=SessionKind.SKILL, owner=elsewhere, started_at=time.time())
        )
        store.claim(CAMPAIGN, "over", recipe="diagnose", inputs={}, caller_session_id=None, owner=store_owner(store))
        store.mark_failed(CAMPAIGN, "over", attempt=1, error="it failed")
    finally:
        store.close()

    with pytest.raises(InvalidInput, match="expected CAMPAIGN NAME"):
        in_process_cancel(hosts, CAMPAIGN)
    with pytest.raises(InvalidInput, match="not both"):
        in_process_cancel(hosts, CAMPAIGN, "over", session="x")
    with pytest.raises(Unusable, match="no live dispatched session"):
        in_process_cancel(hosts, session=str(uuid.uuid4()))
    with pytest.raises(Unusable, match=r"runs on host build-7 under .*4242.*not as a queued dispatch"):
        in_process_cancel(hosts, session=run_skill.run_id)
    with pytest.raises(Unusable, match="is not running: it is failure"):
        in_process_cancel(hosts, CAMPAIGN, "over")
    with pytest.raises(Unusable, match="no dispatch cancel/nothing"):
        in_process_cancel(hosts, CAMPAIGN, "nothing")


def store_owner(store: PostgresCampaignStore) -> Owner:
    return Owner.current(store.host)


@pytest.mark.anyio
async def test_over_mcp_cancel_session_and_a_cancelled_dispatch_call_each_abort_the_job_on_its_worker(
    queue_hosts: QueueHosts,  # noqa: F811
) -> None:
    hosts = queue_hosts
    hosts.start("a", EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR=LONG)
    env = {**hosts.env("server"), "CLAUDE_CODE_SESSION_ID": str(uuid.uuid4())}
    settings = load_settings(
        home=hosts.home("server"),
        store_url=hosts.url,
        host_name="server",
        dispatch_mode="queue",
        claude_command=FAKE_AGENT_COMMAND,
        allowed_roots=(hosts.root,),
        kill_grace=0.5,
        lease_interval=0.5,
        lease_ttl=1.5,
        progress_interval=0.5,
        store_timeout=3,
    )
    other = dispatch_in_background(hosts, "by-tool", caller=str(uuid.uuid4()))
    arguments = {"campaign": CAMPAIGN, "recipe": "diagnose", "inputs": {"problem": "x"}, "cwd": str(hosts.root)}
    async with Client(build_server(settings, env=env)) as client:
        running = await anyio.to_thread.run_sync(
            lambda: hosts.wait_for("the other host's job running", lambda: record_in(hosts, "by-tool", "running"))
        )
        # The record says running as the worker takes it, a moment before the session's run is recorded and
        # it launches; cancel_session finds a queued dispatch through that run record, so wait for the launch.
        await anyio.to_thread.run_sync(
            lambda: hosts.wait_for("its launch", lambda: hosts.launches(running["dispatched_session_id"]))
        )
        stopped = await client.call_tool("cancel_session", {"session_id": running["dispatched_session_id"]})
        assert not stopped.is_error, stopped.content
        assert stopped.structured_content is not None
        assert stopped.structured_content["cancelled"] is True

        async with anyio.create_task_group() as group:
            group.start_soon(client.call_tool, "dispatch", {**arguments, "name": "by-client"})
            mine = await anyio.to_thread.run_sync(
                lambda: hosts.wait_for("the client's job running", lambda: record_in(hosts, "by-client", "running"))
            )
            [launch] = await anyio.to_thread.run_sync(
                lambda: hosts.wait_for("its launch", lambda: hosts.launches(mine["dispatched_session_id"]))
            )
            group.cancel_scope.cancel()  # the client gives up on its call

        ended = await anyio.to_thread.run_sync(
            lambda: hosts.wait_for("the client's job cancelled", lambda: record_in(hosts, "by-client", "cancelled"))
        )
    assert ended["attempts"] == mine["attempts"]
    assert not alive(launch["pid"])
    assert finish(other)[0] == 1
    record = hosts.record(CAMPAIGN, "by-tool")
    assert record is not None
    assert record["status"] == "cancelled"
