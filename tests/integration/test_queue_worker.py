"""`expeditor worker` itself: how it stops, what it refuses, and what it fences out, as real processes.

Workers are hosts of their own (``tests.support.queue_hosts``) on a PostgreSQL database with the queue's schema; the
fake agent's invocation log counts launches across all of them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from tests.support.postgres import STORE_SCHEMA, PostgresServer
from tests.support.queue_hosts import QueueHosts, require_procrastinate

pytestmark = pytest.mark.usefixtures("_procrastinate")

SLOW = {"steps": [{"assistant": "Working."}, {"sleep": 2}, {"result": {}}]}
DONE = {"steps": [{"assistant": "Diagnosed."}, {"result": {}}]}
REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture
def _procrastinate() -> None:
    require_procrastinate()


def problem(scenario: dict[str, Any]) -> str:
    return f"problem={json.dumps(scenario)}"


def dispatching(hosts: QueueHosts, name: str, scenario: dict[str, Any], *extra: str) -> subprocess.Popen[str]:
    """`expeditor dispatch camp NAME` in the background, as a process of the host "dispatcher"."""
    argv = hosts.expeditor_argv("dispatch", "camp", name, "--recipe", "diagnose", "--input", problem(scenario))
    return subprocess.Popen(
        [*argv, "--json", *extra],
        env=hosts.env("dispatcher"),
        cwd=hosts.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_at_once(commands: list[tuple[list[str], dict[str, str]]], cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    """Run every command (argv, environment) at the same time; their results in order."""
    started = [
        (
            argv,
            subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for argv, env in commands
    ]
    done: list[subprocess.CompletedProcess[str]] = []
    for argv, process in started:
        out, err = process.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(argv, process.returncode, out, err))
    return done


def job_count(hosts: QueueHosts) -> int:
    return int(hosts.rows("SELECT count(*) AS n FROM procrastinate_jobs")[0]["n"])


def running(hosts: QueueHosts, name: str, attempt: int = 1) -> dict[str, Any] | None:
    record = hosts.record("camp", name)
    ok = record is not None and record["status"] == "running" and record["attempts"] == attempt
    return record if ok else None


def test_sigterm_kills_the_sessions_at_once_and_queues_the_dispatch_again(queue_hosts: QueueHosts) -> None:
    alpha = queue_hosts.start("alpha", wait=False)
    beta = queue_hosts.start("beta", wait=False)
    alpha.wait_ready()
    beta.wait_ready()
    # Long enough to be stopped mid-run, short enough for the next attempt to succeed while the caller waits.
    dispatcher = dispatching(queue_hosts, "long", SLOW)
    first = queue_hosts.wait_for("attempt 1 running", lambda: running(queue_hosts, "long"))
    (launch,) = queue_hosts.wait_for("the orchestrator's launch", lambda: queue_hosts.launches())
    session = psutil.Process(launch["pid"])
    owner, other = (alpha, beta) if first["owner_host"] == "alpha" else (beta, alpha)

    signalled = time.monotonic()
    owner.signal(signal.SIGTERM)
    session.wait(timeout=5)
    died = time.monotonic() - signalled
    queue_hosts.wait_for("attempt 2", lambda: (queue_hosts.record("camp", "long") or {}).get("attempts") == 2)
    requeued = time.monotonic() - signalled
    assert owner.process.wait(timeout=10) == 0
    second = queue_hosts.wait_for("attempt 2 running", lambda: running(queue_hosts, "long", 2), timeout=30)
    # Its job waited on the lock of the stopped one: fetched at the next poll (stall_check_interval, 0.5 s here),
    # not procrastinate's 5 s default.
    restarted = time.monotonic() - signalled

    # 50 ms of shutdown grace plus the teardown; the re-queue does not wait for the stall threshold (1.5 s).
    assert died < 1.0, died
    assert requeued < 1.5, requeued
    assert restarted < 3.0, restarted
    assert second["owner_host"] == other.host
    (stopped,) = queue_hosts.rows("SELECT status, reason FROM runs WHERE run_id = %s", (launch["session_id"],))
    assert stopped == {
        "status": "cancelled",
        "reason": f"the worker on {owner.host} received SIGTERM and stopped the session",
    }
    first_job = queue_hosts.rows("SELECT status FROM procrastinate_jobs WHERE id = %s", (first["queue_job_id"],))
    assert first_job[0]["status"] != "doing"
    # The caller follows its job to the attempt that ran it to the end, not the one the stop interrupted.
    out, err = dispatcher.communicate(timeout=60)
    assert dispatcher.returncode == 0, out + err
    outcome = json.loads(out)
    assert (outcome["status"], outcome["attempts"], outcome["host"]) == ("success", 2, other.host)


def test_a_dispatcher_killed_while_it_waits_leaves_the_job_running_and_a_success_short_circuits_everywhere(
    queue_hosts: QueueHosts,
) -> None:
    queue_hosts.start("alpha")
    dispatcher = dispatching(queue_hosts, "steady", SLOW)
    queue_hosts.wait_for("attempt 1 running", lambda: running(queue_hosts, "steady"))
    dispatcher.send_signal(signal.SIGKILL)
    dispatcher.communicate()
    done = queue_hosts.wait_for(
        "success", lambda: (queue_hosts.record("camp", "steady") or {}).get("status") == "success", timeout=30
    )
    assert done
    jobs = job_count(queue_hosts)

    repeats = [
        subprocess.Popen(
            [*queue_hosts.expeditor_argv("dispatch", "camp", "steady", "--recipe", "diagnose"), "--json"],
            env=queue_hosts.env(host),
            cwd=queue_hosts.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host in ("h1", "h2", "h3")
    ]
    outcomes = []
    for repeat in repeats:
        out, err = repeat.communicate(timeout=60)
        assert repeat.returncode == 0, err
        outcomes.append(json.loads(out))
    assert [(o["short_circuited"], o["status"], o["attempts"]) for o in outcomes] == [(True, "success", 1)] * 3
    assert job_count(queue_hosts) == jobs, "a short-circuit defers no job"
    assert len(queue_hosts.launches()) == 1


def test_a_cwd_missing_on_the_worker_fails_naming_host_and_path_and_a_job_without_its_record_is_fenced_out(
    queue_hosts: QueueHosts,
) -> None:
    from procrastinate import App, SyncPsycopgConnector

    from expeditor.queue.tasks import RUN_DISPATCH

    alpha = queue_hosts.start("alpha")
    missing = queue_hosts.root / "not-on-this-host"
    done = queue_hosts.expeditor(
        "dispatch", "camp", "elsewhere", "--recipe", "diagnose", "--input", problem(DONE), "--cwd", str(missing)
    )
    assert done.returncode == 1, done.stderr
    record = queue_hosts.record("camp", "elsewhere")
    assert record is not None
    # No session ever started: the outcome's line names none.
    assert done.stdout.splitlines()[0].startswith(
        f"camp/elsewhere: failure (attempt 1, dispatch {record['dispatch_id']}, host "
    )
    assert record["status"] == "failure"
    assert "alpha" in record["error"]
    assert str(missing) in record["error"]

    connector = SyncPsycopgConnector(conninfo=queue_hosts.url, kwargs={"options": f"-c search_path={STORE_SCHEMA}"})
    with App(connector=connector).open() as app:
        ghost = app.configure_task(RUN_DISPATCH, queue="dispatches").defer(
            campaign="camp", name="ghost", dispatch_id="no-such-dispatch"
        )
    alpha.wait_for_line("fenced out")
    queue_hosts.wait_for(
        "the ghost job's end",
        lambda: (
            queue_hosts.rows("SELECT status FROM procrastinate_jobs WHERE id = %s", (ghost,))[0]["status"]
            == "succeeded"
        ),
    )
    assert queue_hosts.record("camp", "ghost") is None
    assert queue_hosts.launches() == [], "neither job launched a session"


def test_bad_input_is_refused_on_the_dispatching_host_before_any_claim_or_job(queue_hosts: QueueHosts) -> None:
    env = queue_hosts.env("dispatcher")
    unknown, missing_input, outside = run_at_once(
        [
            (queue_hosts.expeditor_argv("dispatch", "camp", "a", "--recipe", "no-such-recipe"), env),
            (queue_hosts.expeditor_argv("dispatch", "camp", "b", "--recipe", "diagnose"), env),
            (
                queue_hosts.expeditor_argv(
                    "dispatch", "camp", "c", "--recipe", "diagnose", "--input", problem(DONE), "--cwd", "/etc"
                ),
                env,
            ),
        ],
        queue_hosts.root,
    )
    for refused, what in ((unknown, "no-such-recipe"), (missing_input, "problem"), (outside, "/etc")):
        assert refused.returncode != 0
        assert what in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert queue_hosts.rows("SELECT * FROM dispatches") == []
    assert job_count(queue_hosts) == 0


def _one_line_refusal(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0]


def test_queue_mode_on_sqlite_and_a_worker_without_the_extra_each_stop_with_one_line(tmp_path: Path) -> None:
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("EXPEDITOR_")},
        "EXPEDITOR_TEST_TAG": os.environ.get("EXPEDITOR_TEST_TAG", ""),
        "EXPEDITOR_HOME": str(tmp_path / "home"),
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
        "EXPEDITOR_DISPATCH_MODE": "queue",
    }

    without = (
        "import sys; sys.modules['procrastinate'] = None; from expeditor.cli import main; raise SystemExit(main())"
    )
    url = {**env, "EXPEDITOR_STORE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    dispatched, served, worker, no_extra = run_at_once(
        [
            ([sys.executable, "-m", "expeditor", "dispatch", "c", "a", "--recipe", "diagnose", "--input", "p=x"], env),
            ([sys.executable, "-m", "expeditor", "serve"], env),
            ([sys.executable, "-m", "expeditor", "worker"], env),
            ([sys.executable, "-c", without, "worker"], url),
        ],
        REPOSITORY,
    )
    _one_line_refusal(dispatched, "store_url")
    _one_line_refusal(served, "store_url")
    _one_line_refusal(worker, "store_url")
    _one_line_refusal(no_extra, "pip install 'expeditor[queue]'")


def test_db_migrate_applies_the_queue_and_a_worker_on_an_unmigrated_database_says_to_run_it(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    # Never migrated at all, as a new user's database before `expeditor db migrate`.
    url = postgres_server.url(postgres_server.create_empty_database("unmigrated"))
    hosts = QueueHosts(url=url, root=tmp_path)
    _one_line_refusal(hosts.expeditor("worker", "--host-name", "alpha"), "expeditor db migrate")
    refused = hosts.expeditor("dispatch", "camp", "early", "--recipe", "diagnose", "--input", "problem=x")
    _one_line_refusal(refused, "has no job queue", "expeditor db migrate")

    first = hosts.expeditor("db", "migrate")
    assert first.returncode == 0, first.stderr
    assert "job queue of procrastinate none ->" in first.stdout
    again = hosts.expeditor("db", "migrate")
    assert "nothing to apply" in again.stdout.splitlines()[-1]

    hosts.execute("UPDATE queue_version SET version = '99.0.0'")
    newer = hosts.expeditor("db", "migrate")
    _one_line_refusal(newer, "99.0.0", "downgrade")
    with psycopg.connect(url) as connection:
        row = connection.execute(f"SELECT version FROM {STORE_SCHEMA}.queue_version").fetchone()
    assert row == ("99.0.0",), "a refused downgrade changes nothing"
