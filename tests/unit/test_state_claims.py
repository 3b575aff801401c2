"""The rules every store applies (``state.claims``), as the pure functions they are; and SQLite's own answer
to an owner on another host. The stores applying them are the contract suite's (tests/contract/)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from expeditor.errors import IllegalTransition, StaleAttempt
from expeditor.executor.models import SessionKind
from expeditor.state import (
    ClaimAction,
    DispatchRecord,
    DispatchStatus,
    Owner,
    RunRecord,
    RunStatus,
    SqliteCampaignStore,
)
from expeditor.state.claims import (
    ClaimRequest,
    decide_claim,
    fenced_transition,
    liveness_matters,
    next_launch,
    restored_dispatch,
)

ME = Owner.current()
OTHER = Owner(pid=4242, start_time=10.0, host="other.invalid")
NOW = 1000.0


def request(*, force: bool = False, owner: Owner = ME, **inputs: str) -> ClaimRequest:
    return ClaimRequest.of(
        "camp", "job", recipe="r", inputs=inputs or {"a": "1"}, caller_session_id="c", owner=owner, force=force, now=NOW
    )


def record(status: DispatchStatus, *, attempts: int = 1, owner: Owner = OTHER) -> DispatchRecord:
    first = decide_claim(None, request(owner=owner), owner_alive=False).launched
    assert first is not None
    return first.model_copy(update={"status": status, "attempts": attempts, "dispatched_session_id": "s-1"})


def test_a_new_job_is_created_pending_at_attempt_one() -> None:
    decision = decide_claim(None, request(), owner_alive=False)
    assert (decision.action, decision.new, decision.interrupted) == (ClaimAction.LAUNCH, True, None)
    assert decision.launched == decision.claim.record
    assert (decision.claim.record.status, decision.claim.attempt, decision.claim.record.owner) == (
        DispatchStatus.PENDING,
        1,
        ME,
    )


@pytest.mark.parametrize("status", list(DispatchStatus))
@pytest.mark.parametrize("alive", [False, True])
@pytest.mark.parametrize("force", [False, True])
def test_every_prior_status_owner_and_force_has_one_outcome(status: DispatchStatus, alive: bool, force: bool) -> None:
    current = record(status)
    decision = decide_claim(current, request(force=force), owner_alive=alive)
    unfinished = status in (DispatchStatus.PENDING, DispatchStatus.RUNNING)
    assert liveness_matters(current) is unfinished
    if status is DispatchStatus.SUCCESS and not force:
        expected = ClaimAction.SHORT_CIRCUIT
    elif unfinished and alive:
        expected = ClaimAction.ALREADY_RUNNING
    else:
        expected = ClaimAction.LAUNCH
    assert decision.action is expected
    if expected is not ClaimAction.LAUNCH:
        assert (decision.launched, decision.interrupted, decision.claim.record) == (None, None, current)
        return
    assert decision.launched is not None
    assert (decision.launched.status, decision.launched.attempts, decision.launched.owner) == (
        DispatchStatus.PENDING,
        2,
        ME,
    )
    assert (decision.interrupted is not None) is (status is DispatchStatus.RUNNING)
    assert decision.claim.interrupted_owner == (OTHER if status is DispatchStatus.RUNNING else None)
    assert decision.claim.prior_session_id == (None if status is DispatchStatus.SUCCESS else "s-1")


def test_a_relaunch_forgets_the_last_attempt_s_result() -> None:
    done = record(DispatchStatus.SUCCESS).model_copy(update={"result_summary": "merged", "outputs": {"pr": 7}})
    launched = decide_claim(done, request(force=True, a="2"), owner_alive=False).launched
    assert launched is not None
    assert (launched.result_summary, launched.outputs, launched.inputs, launched.dispatch_id) == (
        None,
        {},
        {"a": "2"},
        done.dispatch_id,
    )


def test_the_fence_refuses_a_missing_record_a_stale_attempt_and_an_illegal_move() -> None:
    with pytest.raises(IllegalTransition, match="has no record"):
        fenced_transition(None, job="camp/job", attempt=1, target=DispatchStatus.RUNNING, changes={}, now=NOW)
    running = record(DispatchStatus.RUNNING, attempts=2)
    with pytest.raises(StaleAttempt, match="attempt 1 may not become success: the record is at attempt 2"):
        fenced_transition(running, job="camp/job", attempt=1, target=DispatchStatus.SUCCESS, changes={}, now=NOW)
    with pytest.raises(IllegalTransition, match="from running to pending"):
        fenced_transition(running, job="camp/job", attempt=2, target=DispatchStatus.PENDING, changes={}, now=NOW)
    done = fenced_transition(
        running, job="camp/job", attempt=2, target=DispatchStatus.SUCCESS, changes={"result_summary": "ok"}, now=NOW
    )
    assert (done.status, done.result_summary, done.updated_at) == (DispatchStatus.SUCCESS, "ok", NOW)


def test_a_run_launches_again_only_once_its_last_launch_ended_or_its_owner_is_gone() -> None:
    first = RunRecord(run_id="s", kind=SessionKind.SKILL, owner=OTHER, started_at=1.0)
    assert next_launch(None, first, False, NOW).launch == 1
    with pytest.raises(IllegalTransition, match="still running"):
        next_launch(first, first, True, NOW)
    assert next_launch(first, first, False, NOW).launch == 2
    ended = first.model_copy(update={"status": RunStatus.SUCCESS})
    assert next_launch(ended, first, True, NOW).launch == 2


def test_a_restore_of_another_attempt_is_stale() -> None:
    current = record(DispatchStatus.RUNNING, attempts=2)
    with pytest.raises(StaleAttempt):
        restored_dispatch(current, current.model_copy(update={"attempts": 1, "status": DispatchStatus.FAILURE}))
    ended = current.model_copy(update={"status": DispatchStatus.FAILURE})
    assert restored_dispatch(current, ended) == (ended, True)
    assert restored_dispatch(ended, ended.model_copy(update={"status": DispatchStatus.SUCCESS})) == (ended, False)


# --- SQLite: one machine, so an owner on another host cannot be checked and is taken to be alive ---------


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteCampaignStore]:
    opened = SqliteCampaignStore(tmp_path / "state.sqlite3", busy_timeout=1.0)
    yield opened
    opened.close()


def test_sqlite_takes_an_owner_on_another_host_to_be_alive(sqlite_store: SqliteCampaignStore) -> None:
    claimed = sqlite_store.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=OTHER)
    sqlite_store.mark_running("camp", "job", attempt=1, dispatched_session_id="s-1")
    sqlite_store.record_run_started(
        RunRecord(run_id="s-1", kind=SessionKind.SKILL, owner=OTHER, started_at=time.time(), dispatch_id="d")
    )
    again = sqlite_store.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=ME)
    assert again.action is ClaimAction.ALREADY_RUNNING
    assert sqlite_store.interrupt_runs_of_dead_owners() == []
    assert sqlite_store.interrupt_dispatches_of_dead_owners() == []
    assert sqlite_store.owner_alive(claimed.record)
