"""Concurrent claims and writers on one real SQLite store: one launch, no lost update."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from expeditor.errors import StaleAttempt
from expeditor.executor.models import SessionKind
from expeditor.state import ClaimAction, DispatchStatus, Owner, RunRecord, RunStatus, SqliteCampaignStore
from expeditor.usage.models import SessionUsage

ME = Owner.current()

# A claimer in its own process: opens the store, says "ready", claims on "go", prints what it was
# told, and stays alive (so its claim's owner is alive) until told to exit.
CLAIMER = """
import json, sys
from pathlib import Path
from expeditor.state import Owner, SqliteCampaignStore
store = SqliteCampaignStore(Path(sys.argv[1]), busy_timeout=10)
owner = Owner.current()
print("ready", flush=True)
sys.stdin.readline()
claim = store.claim("camp", "job", recipe="impl", inputs={"issue": "42"}, caller_session_id=None, owner=owner)
print(json.dumps({"action": claim.action.value, "attempt": claim.attempt}), flush=True)
sys.stdin.readline()
store.close()
"""


def test_twenty_threads_claiming_one_new_name_launch_it_once(tmp_path: Path) -> None:
    store = SqliteCampaignStore(tmp_path / "state.sqlite3", busy_timeout=10)
    barrier = threading.Barrier(20)
    actions: list[ClaimAction] = []
    errors: list[BaseException] = []

    def claimer() -> None:
        try:
            barrier.wait(timeout=10)
            claim = store.claim("camp", "job", recipe="impl", inputs={"issue": "42"}, caller_session_id=None, owner=ME)
            actions.append(claim.action)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claimer) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    store.close()
    assert errors == []
    assert Counter(actions) == {ClaimAction.LAUNCH: 1, ClaimAction.ALREADY_RUNNING: 19}


def test_eight_processes_claiming_one_new_name_launch_it_once(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        answers = []
        for child in children:
            assert child.stdout is not None
            answers.append(json.loads(child.stdout.readline()))
    finally:
        for child in children:
            assert child.stdin is not None
            child.stdin.close()
        for child in children:
            child.wait(timeout=10)
            assert child.stdout is not None
            child.stdout.close()
    assert Counter(answer["action"] for answer in answers) == {"launch": 1, "already_running": 7}
    assert {answer["attempt"] for answer in answers} == {1}
    assert all(child.returncode == 0 for child in children)


def test_eight_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    rounds = 25
    barrier = threading.Barrier(8)
    launches = Counter[str]()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def cycle(store: SqliteCampaignStore, name: str) -> bool:
        """Claim (forced), run and succeed ``name``; False when another writer holds it."""
        claim = store.claim("camp", name, recipe="impl", inputs={}, caller_session_id=None, owner=ME, force=True)
        if claim.action is not ClaimAction.LAUNCH:
            return False
        session = f"{name}-{claim.attempt}"
        store.mark_running("camp", name, attempt=claim.attempt, dispatched_session_id=session)
        run = RunRecord(
            run_id=session, kind=SessionKind.ORCHESTRATOR, campaign_id="camp", job_name=name, owner=ME, started_at=0.0
        )
        store.record_run_started(run)
        store.record_run_finished(
            session, status=RunStatus.SUCCESS, termination=None, usage=SessionUsage(), reason=None
        )
        store.mark_succeeded("camp", name, attempt=claim.attempt, summary=session)
        return True

    def writer(index: int) -> None:
        store = SqliteCampaignStore(path, busy_timeout=10)
        try:
            barrier.wait(timeout=10)
            for _ in range(rounds):
                for name in (f"own-{index}", "shared"):
                    if cycle(store, name):
                        with lock:
                            launches[name] += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not [error for error in errors if isinstance(error, StaleAttempt)], "a fenced write was refused"
    assert errors == []
    store = SqliteCampaignStore(path)
    records = {record.name: record for record in store.list("camp")}
    runs = Counter(run.job_name for run in store.list_runs("camp") if run.status is RunStatus.SUCCESS)
    store.close()
    assert {name: record.attempts for name, record in records.items()} == dict(launches)
    assert all(record.status is DispatchStatus.SUCCESS for record in records.values())
    assert dict(runs) == dict(launches)
    assert launches["shared"] >= 1
    assert all(launches[f"own-{index}"] == rounds for index in range(8))
