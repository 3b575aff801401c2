"""Queue mode end to end: real `expeditor worker` processes on PostgreSQL, dispatches from other processes.

Each worker is a host of its own (``tests.support.queue_hosts``); the fake agent's invocation log, shared by all
hosts, counts launches.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.queue_hosts import QueueHosts, require_procrastinate

pytestmark = pytest.mark.usefixtures("_procrastinate")

DONE = {"steps": [{"assistant": "Diagnosed."}, {"result": {}}]}


@pytest.fixture
def _procrastinate() -> None:
    require_procrastinate()


def problem(scenario: dict[str, Any]) -> str:
    """A diagnose input whose text carries the fake orchestrator's scenario."""
    return f"problem={json.dumps(scenario)}"


def dispatch(
    hosts: QueueHosts, name: str, *extra: str, host: str = "dispatcher", settings: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return hosts.expeditor(
        "dispatch",
        "camp",
        name,
        "--recipe",
        "diagnose",
        "--input",
        problem(DONE),
        "--json",
        *extra,
        host=host,
        extra=settings,
    )


def test_a_dispatch_runs_on_a_worker_and_returns_its_outcome_with_the_host(queue_hosts: QueueHosts) -> None:
    queue_hosts.start("alpha")
    done = dispatch(queue_hosts, "one")
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert (outcome["status"], outcome["host"], outcome["attempts"]) == ("success", "alpha", 1)
    (launch,) = queue_hosts.launches()
    assert launch["session_id"] == outcome["dispatched_session_id"]
    record = queue_hosts.record("camp", "one")
    assert record is not None
    assert record["owner_host"] == "alpha"
    assert record["queue_job_id"] is not None

    # A spent budget is refused on the dispatching host, before the claim: no record, no job.
    assert queue_hosts.expeditor("campaign", "budget", "camp", "--tokens", "1").returncode == 0
    refused = dispatch(queue_hosts, "over-budget")
    assert refused.returncode != 0
    (line,) = refused.stderr.strip().splitlines()
    assert "of its 1-token budget: nothing more of it is launched" in line, line
    assert queue_hosts.record("camp", "over-budget") is None
    assert len(queue_hosts.rows("SELECT id FROM procrastinate_jobs")) == 1


def test_racing_callers_on_many_hosts_launch_each_name_exactly_once(queue_hosts: QueueHosts) -> None:
    """10 names, each asked for 10 times at once by 5 processes (2 callers each): 100 callers, 3 workers.

    Liveness is not under test here: leases last 10 s, so a claimer starved of CPU on a loaded machine is not
    taken for dead (which would rightly relaunch its pending attempt as attempt 2)."""
    long_leases = {"EXPEDITOR_LEASE_INTERVAL": "1", "EXPEDITOR_LEASE_TTL": "10"}
    names = [f"job{index}" for index in range(10)]
    argv = [sys.executable, "-m", "tests.support.queue_dispatcher", "diagnose", problem(DONE), "2", *names]
    racers = [
        subprocess.Popen(
            argv,
            env=queue_hosts.env(f"dispatcher{index}", **long_leases),
            cwd=Path(__file__).resolve().parents[2],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for index in range(5)
    ]
    # Every process starts at once (on a loaded machine, starting is most of this test's time).
    for host in ("alpha", "beta", "gamma"):
        queue_hosts.start(host, wait=False, extra=long_leases)
    for worker in queue_hosts.workers:
        worker.wait_ready()
    for racer in racers:
        assert racer.stdout is not None
        assert racer.stdout.readline().strip() == "ready"
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    outcomes = [json.loads(line) for racer in racers for line in racer.communicate(timeout=120)[0].splitlines()]
    assert [racer.returncode for racer in racers] == [0] * 5
    assert len(outcomes) == 100

    launched = [entry["cwd"] for entry in queue_hosts.launches()]
    assert len(launched) == len(names), "one launch per name"
    records = {row["name"]: row for row in queue_hosts.rows("SELECT * FROM dispatches")}
    for name in names:
        seen = {(outcome["dispatch_id"], outcome["attempts"]) for outcome in outcomes if outcome["name"] == name}
        assert seen == {(records[name]["dispatch_id"], 1)}, name
        assert records[name]["status"] == "success"
    jobs = queue_hosts.rows("SELECT count(*) AS n FROM procrastinate_jobs")
    assert jobs == [{"n": len(names)}], "one job per name"


@pytest.mark.anyio
async def test_an_mcp_client_cancelling_its_dispatch_aborts_the_job_waiting_or_running(queue_hosts: QueueHosts) -> None:
    """A waiting job is cancelled and never launched; a running one's worker kills its session; both records say
    ``cancelled``. The server is in this process, in queue mode; the worker is a process of its own."""
    import anyio
    import psutil
    from mcp import Client

    from expeditor.server.app import build_server
    from tests.support.fake import fake_settings

    settings = fake_settings(
        queue_hosts.root,
        home=queue_hosts.home("server"),
        store_url=queue_hosts.url,
        dispatch_mode="queue",
        host_name="server",
        lease_interval=0.5,
        lease_ttl=1.5,
        progress_interval=0.5,
    )
    hanging = {"steps": [{"assistant": "Working."}, {"hang": True}]}
    arguments = {"recipe": "diagnose", "inputs": {"problem": json.dumps(hanging)}, "cwd": str(queue_hosts.root)}

    told_no_worker = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if message and "no worker is alive to take it" in message:
            told_no_worker.set()

    async def cancelled_once(client: Client, name: str, status: str) -> dict[str, Any]:
        async def call() -> None:
            arguments_of_call = {"campaign": "camp", "name": name, **arguments}
            await client.call_tool("dispatch", arguments_of_call, progress_callback=on_progress)

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            await anyio.to_thread.run_sync(
                lambda: queue_hosts.wait_for(f"{name} {status}", lambda: _status(queue_hosts, name) == status)
            )
            if status == "pending":  # the caller hears, while it waits, that nothing could take its job
                with anyio.fail_after(10):
                    await told_no_worker.wait()
            if status == "running":  # cancelled once its session is there to kill
                await anyio.to_thread.run_sync(
                    lambda: queue_hosts.wait_for("the launch", lambda: queue_hosts.launches())
                )
            group.cancel_scope.cancel()
        return await anyio.to_thread.run_sync(
            lambda: queue_hosts.wait_for(f"{name} cancelled", lambda: _cancelled(queue_hosts, name), timeout=10)
        )

    async with Client(build_server(settings)) as client:
        waiting = await cancelled_once(client, "waiting", "pending")
        assert _job_status(queue_hosts, waiting["queue_job_id"]) == "cancelled"
        worker = await anyio.to_thread.run_sync(lambda: queue_hosts.start("alpha"))
        running = await cancelled_once(client, "running", "running")
        (launch,) = queue_hosts.launches()
        assert not psutil.pid_exists(launch["pid"]) or psutil.Process(launch["pid"]).status() == psutil.STATUS_ZOMBIE
        await anyio.to_thread.run_sync(
            lambda: queue_hosts.wait_for(
                "the running job aborted", lambda: _job_status(queue_hosts, running["queue_job_id"]) == "aborted"
            )
        )
    assert [entry["session_id"] for entry in queue_hosts.launches()] == [running["dispatched_session_id"]]
    assert "fenced out" not in worker.text()


def _status(hosts: QueueHosts, name: str) -> str | None:
    record = hosts.record("camp", name)
    return None if record is None else str(record["status"])


def _cancelled(hosts: QueueHosts, name: str) -> dict[str, Any] | None:
    record = hosts.record("camp", name)
    return record if record is not None and record["status"] == "cancelled" else None


def _live_leases(hosts: QueueHosts) -> list[dict[str, Any]]:
    return hosts.rows("SELECT pid FROM owners WHERE lease_expires_at > extract(epoch FROM now())")


def _job_status(hosts: QueueHosts, job_id: int) -> str:
    return str(hosts.rows("SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,))[0]["status"])


def test_with_no_worker_alive_the_call_returns_the_waiting_record_at_its_deadline(queue_hosts: QueueHosts) -> None:
    done = dispatch(queue_hosts, "unserved", settings={"EXPEDITOR_DISPATCH_TIMEOUT": "1"})
    assert done.returncode == 1, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["status"] == "pending"
    assert "the dispatch deadline (1 s) passed while it was pending; it goes on" in outcome["message"]
    assert queue_hosts.launches() == []
    assert queue_hosts.rows("SELECT status FROM procrastinate_jobs") == [{"status": "todo"}]

    # Its claimer is gone now; a worker starting later (its reaper first) runs the waiting job all the same.
    queue_hosts.wait_for("the dispatcher's lease gone", lambda: not _live_leases(queue_hosts))
    alpha = queue_hosts.start("alpha")
    queue_hosts.wait_for("the waiting job run", lambda: _status(queue_hosts, "unserved") == "success")
    assert "fenced out" not in alpha.text()


def test_a_queued_dispatch_with_isolation_worktree_runs_in_a_worktree_on_the_worker(queue_hosts: QueueHosts) -> None:
    """``--isolation worktree`` rides on the record to the worker, which makes the job's worktree there."""
    project = queue_hosts.root / "project"
    project.mkdir()
    (project / "app.txt").write_text("original\n")
    for args in (("init", "--quiet", "--initial-branch=main"), ("add", "app.txt"), ("commit", "--quiet", "-m", "1")):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", *args], cwd=project, check=True)
    queue_hosts.start("alpha")
    edit = {"steps": [{"write_file": {"path": "app.txt", "text": "edited\n"}}, {"result": "edited"}]}
    isolated = ["--cwd", str(project), "--isolation", "worktree"]
    done = queue_hosts.expeditor(
        "dispatch", "camp", "isolated", "--recipe", "diagnose", "--input", problem(edit), *isolated
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0].endswith(", host alpha)"), done.stdout
    (launch,) = queue_hosts.launches()
    worktrees = queue_hosts.home("alpha") / "worktrees"
    assert Path(launch["cwd"]).is_relative_to(worktrees), launch["cwd"]
    record = queue_hosts.record("camp", "isolated")
    assert record is not None
    assert (record["isolation"], record["branch"]) == ("worktree", "expeditor/camp/isolated")
    assert Path(record["worktree"]).is_relative_to(worktrees)
    assert (project / "app.txt").read_text() == "original\n"  # the checkout itself is untouched
    shown = subprocess.run(
        ["git", "show", "expeditor/camp/isolated:app.txt"], cwd=project, check=True, capture_output=True, text=True
    )
    assert shown.stdout == "edited\n"
