"""Concurrent claimers and writers, threads and processes, on one store of each kind: one launch, no lost update."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection

from expeditor.executor.models import SessionKind
from expeditor.state import CampaignStore, ClaimAction, DispatchStatus, Owner, RunRecord, RunStatus
from expeditor.usage.models import SessionUsage
from tests.contract.conftest import StoreMaker, open_store_at

ME = Owner.current()

FORK = multiprocessing.get_context("fork")  # children start with everything imported: no interpreter start-up each


def claim_part(store: CampaignStore, owner: Owner, _: int, __: float) -> dict[str, object]:
    claim = store.claim("camp", "job", recipe="impl", inputs={"issue": "42"}, caller_session_id=None, owner=owner)
    return {"action": claim.action.value, "attempt": claim.attempt, "id": claim.record.dispatch_id}


def write_part(store: CampaignStore, owner: Owner, index: int, seconds: float) -> dict[str, object]:
    """Claim (forced), run and succeed a job of its own and a shared one, over and over; how often each launched."""
    deadline, launches = time.monotonic() + seconds, Counter[str]()
    while time.monotonic() < deadline:
        for name in (f"own-{index}", "shared"):
            claim = store.claim("camp", name, recipe="impl", inputs={}, caller_session_id=None, owner=owner, force=True)
            if claim.action is not ClaimAction.LAUNCH:
                continue
            session = f"{name}-{claim.attempt}"
            store.mark_running("camp", name, attempt=claim.attempt, dispatched_session_id=session)
            run = RunRecord(
                run_id=session,
                kind=SessionKind.ORCHESTRATOR,
                campaign_id="camp",
                job_name=name,
                owner=owner,
                started_at=time.time(),
            )
            store.record_run_started(run)
            store.record_run_finished(
                session, status=RunStatus.SUCCESS, termination=None, usage=SessionUsage(), reason=None
            )
            store.mark_succeeded("camp", name, attempt=claim.attempt, summary=session)
            launches[name] += 1
    return dict(launches)


Part = Callable[[CampaignStore, Owner, int, float], dict[str, object]]


def _child(kind: str, location: str, part: Part, index: int, seconds: float, channel: Connection) -> None:
    """One process: open the store, say ready, do its part on "go", answer, and stay alive (its claims' owner
    alive) until told to exit."""
    store = open_store_at(kind, location, timeout=20)
    try:
        channel.send("ready")
        channel.recv()
        channel.send(part(store, Owner.current(), index, seconds))
        channel.recv()
    finally:
        store.close()


def run_children(kind: str, location: str, part: Part, count: int, seconds: float = 0.0) -> list[dict[str, object]]:
    """Start ``count`` processes doing ``part``, release them at once when all are ready, collect their answers."""
    pipes = [FORK.Pipe() for _ in range(count)]
    children = [
        FORK.Process(target=_child, args=(kind, location, part, index, seconds, pipes[index][1]))
        for index in range(count)
    ]
    for child in children:
        child.start()
    try:
        for ours, _ in pipes:
            assert ours.poll(60), "a child never got ready"
            assert ours.recv() == "ready"
        for ours, _ in pipes:
            ours.send("go")
        answers: list[dict[str, object]] = []
        for ours, _ in pipes:
            assert ours.poll(60 + seconds)
            answers.append(ours.recv())
    finally:
        for ours, _ in pipes:
            with contextlib.suppress(OSError):
                ours.send("exit")
        for child in children:
            child.join(timeout=30)
    assert [child.exitcode for child in children] == [0] * count
    return answers


def test_twenty_threads_claiming_one_new_name_launch_it_once(store: CampaignStore) -> None:
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
    assert errors == []
    assert Counter(actions) == {ClaimAction.LAUNCH: 1, ClaimAction.ALREADY_RUNNING: 19}


def test_twenty_processes_claiming_one_new_name_launch_it_once(store_kind: str, store_location: str) -> None:
    answers = run_children(store_kind, store_location, claim_part, 20)
    assert Counter(answer["action"] for answer in answers) == {"launch": 1, "already_running": 19}
    assert {(answer["attempt"], answer["id"]) for answer in answers} == {(1, answers[0]["id"])}


def test_eight_writer_processes_lose_no_update(store_kind: str, store_location: str, make_store: StoreMaker) -> None:
    seconds = 3.0
    answers = run_children(store_kind, store_location, write_part, 8, seconds)
    launches = Counter[str]()
    for answer in answers:
        launches.update({str(name): int(str(count)) for name, count in answer.items()})
    store = make_store()
    records = {record.name: record for record in store.list("camp")}
    runs = Counter(run.job_name for run in store.list_runs("camp") if run.status is RunStatus.SUCCESS)
    assert {name: record.attempts for name, record in records.items()} == dict(launches)
    assert all(record.status is DispatchStatus.SUCCESS for record in records.values())
    assert dict(runs) == dict(launches)
    assert launches["shared"] >= 1
    assert all(launches[f"own-{index}"] >= 1 for index in range(8))
