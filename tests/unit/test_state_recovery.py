"""Ends written after the fact, on real database files: restored records, dead owners' records interrupted,
and an end pressed on a store until it lands (``land_end``)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from expeditor.errors import IllegalTransition, StaleAttempt, StoreUnavailable
from expeditor.executor.models import SessionKind, Termination
from expeditor.runs import EndRetry
from expeditor.runs.endings import encodable_copy, land_end
from expeditor.state import DispatchRecord, DispatchStatus, Owner, RunRecord, RunStatus, SqliteCampaignStore
from expeditor.usage.models import SessionUsage

ME = Owner.current()
GONE = Owner(pid=ME.pid, start_time=ME.start_time - 1000, host=socket.gethostname())  # this pid, an earlier process
NO_DELAY = EndRetry(tries=3, delay=0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteCampaignStore]:
    opened = SqliteCampaignStore(tmp_path / "state.sqlite3", busy_timeout=1.0)
    yield opened
    opened.close()


def claimed(store: SqliteCampaignStore, owner: Owner = ME, name: str = "job") -> DispatchRecord:
    return store.claim("camp", name, recipe="r", inputs={"a": "1"}, caller_session_id=None, owner=owner).record


def ended(record: DispatchRecord, status: DispatchStatus = DispatchStatus.SUCCESS) -> DispatchRecord:
    now = time.time()
    update = {"status": status, "dispatched_session_id": "s-1", "result_summary": "merged", "finished_at": now}
    return record.model_copy(update={**update, "started_at": now, "updated_at": now})


def run(run_id: str = "s-1", owner: Owner = ME, **fields: object) -> RunRecord:
    values: dict[str, object] = {"kind": SessionKind.ORCHESTRATOR, "owner": owner, "started_at": time.time(), **fields}
    return RunRecord.model_validate({"run_id": run_id, **values})


def finished(started: RunRecord) -> RunRecord:
    return started.model_copy(
        update={"status": RunStatus.SUCCESS, "termination": Termination.COMPLETED, "finished_at": time.time()}
    )


def test_a_lost_dispatch_is_inserted_whole_with_its_end(tmp_path: Path, store: SqliteCampaignStore) -> None:
    record = claimed(store)
    fresh = SqliteCampaignStore(tmp_path / "recreated.sqlite3")
    try:
        assert fresh.restore_dispatch(ended(record)).status is DispatchStatus.SUCCESS
        stored = fresh.get("camp", "job")
        assert stored is not None
        assert (stored.status, stored.dispatch_id, stored.attempts) == (DispatchStatus.SUCCESS, record.dispatch_id, 1)
        assert (stored.inputs, stored.result_summary, stored.owner) == ({"a": "1"}, "merged", ME)
        assert fresh.find_completed_dispatch("camp", "job") == stored
    finally:
        fresh.close()


@pytest.mark.parametrize("reached", [DispatchStatus.PENDING, DispatchStatus.RUNNING])
def test_an_unfinished_attempt_takes_the_restored_end(store: SqliteCampaignStore, reached: DispatchStatus) -> None:
    record = claimed(store)
    if reached is DispatchStatus.RUNNING:
        store.mark_running("camp", "job", attempt=1, dispatched_session_id="s-1")
    assert store.restore_dispatch(ended(record, DispatchStatus.FAILURE)).status is DispatchStatus.FAILURE
    stored = store.get("camp", "job")
    assert stored is not None
    assert stored.status is DispatchStatus.FAILURE


def test_an_end_already_recorded_stands_and_another_attempt_is_not_overwritten(store: SqliteCampaignStore) -> None:
    record = claimed(store)
    store.mark_failed("camp", "job", attempt=1, error="launch failed")
    assert store.restore_dispatch(ended(record)).status is DispatchStatus.FAILURE
    claimed(store)  # attempt 2, another claimer's
    with pytest.raises(StaleAttempt, match="attempt 2"):
        store.restore_dispatch(ended(record))
    with pytest.raises(IllegalTransition, match="only be restored with its end"):
        store.restore_dispatch(record)


def test_a_run_is_restored_whole_closed_or_left_as_it_ended(store: SqliteCampaignStore) -> None:
    lost = run("lost")
    assert store.restore_run(finished(lost)).status is RunStatus.SUCCESS
    live = store.record_run_started(run("live"))
    assert store.restore_run(finished(live)).status is RunStatus.SUCCESS
    assert store.restore_run(finished(live).model_copy(update={"status": RunStatus.FAILURE})).status is (
        RunStatus.SUCCESS
    )
    assert {(r.run_id, r.launch): r.status for r in store.list_runs()} == {
        ("lost", 1): RunStatus.SUCCESS,
        ("live", 1): RunStatus.SUCCESS,
    }


def test_a_restored_launch_whose_number_another_launch_holds_becomes_the_next(store: SqliteCampaignStore) -> None:
    first = store.record_run_started(run())
    store.record_run_finished("s-1", status=RunStatus.SUCCESS, termination=None, usage=SessionUsage(), reason=None)
    never_recorded = run(started_at=first.started_at + 5)  # its start was lost: it still says launch 1
    assert store.restore_run(finished(never_recorded)).launch == 2
    assert [(r.launch, r.status) for r in store.list_runs()] == [(1, RunStatus.SUCCESS), (2, RunStatus.SUCCESS)]


def test_start_up_interrupts_the_unfinished_dispatches_of_dead_owners_with_their_runs(
    store: SqliteCampaignStore,
) -> None:
    running = claimed(store, GONE, "running")
    store.mark_running("camp", "running", attempt=1, dispatched_session_id="s-1")
    store.record_run_started(run("s-1", GONE, campaign_id="camp", job_name="running", dispatch_id=running.dispatch_id))
    claimed(store, GONE, "pending")
    claimed(store, ME, "mine")
    claimed(store, Owner(pid=1, start_time=1.0, host="other.invalid"), "elsewhere")
    interrupted = store.interrupt_dispatches_of_dead_owners()
    assert sorted(record.name for record in interrupted) == ["pending", "running"]
    assert {record.name: record.status for record in store.list("camp")} == {
        "elsewhere": DispatchStatus.PENDING,
        "mine": DispatchStatus.PENDING,
        "pending": DispatchStatus.INTERRUPTED,
        "running": DispatchStatus.INTERRUPTED,
    }
    (orphaned_run,) = store.list_runs("camp")
    assert orphaned_run.status is RunStatus.INTERRUPTED
    assert store.interrupt_dispatches_of_dead_owners() == []


def test_an_end_is_retried_while_the_store_is_unavailable_then_restored() -> None:
    calls: list[str] = []

    def mark() -> str:
        calls.append("mark")
        if len(calls) == 1:
            raise StoreUnavailable("busy")
        raise IllegalTransition("no record")

    def restore() -> str:
        calls.append("restore")
        return "restored"

    assert land_end("ending", mark, restore, NO_DELAY) == ("restored", True)
    assert calls == ["mark", "mark", "restore"]


def test_an_end_is_never_pressed_on_another_claimer_s_record_and_gives_up_after_its_tries() -> None:
    def stale() -> str:
        raise StaleAttempt("attempt 2 is current")

    def unavailable() -> str:
        raise StoreUnavailable("disk full")

    with pytest.raises(StaleAttempt):
        land_end("ending", stale, unavailable, NO_DELAY)
    with pytest.raises(StoreUnavailable, match="disk full"):
        land_end("ending", unavailable, unavailable, NO_DELAY)


def test_a_record_is_made_encodable_whole() -> None:
    record = run(reason="cut \ud800 mid-pair", label="\udcff")
    copy = encodable_copy(record)
    assert (copy.reason, copy.label) == ("cut \ufffd mid-pair", "\ufffd")
    copy.model_dump_json()
