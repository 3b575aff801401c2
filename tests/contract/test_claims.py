"""The claim and the fenced transitions, the same on every store (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from expeditor.errors import IllegalTransition, StaleAttempt
from expeditor.executor.models import SessionKind
from expeditor.state import (
    CampaignStore,
    Claim,
    ClaimAction,
    DispatchRecord,
    DispatchStatus,
    Owner,
    RunRecord,
    RunStatus,
)
from expeditor.usage.models import SessionUsage, TokenUsage

INPUTS = {"issue": "42", "repo": "acme/app"}
ME = Owner.current()


def claim(store: CampaignStore, owner: Owner = ME, *, name: str = "job", force: bool = False, **inputs: str) -> Claim:
    return store.claim(
        "camp",
        name,
        recipe="implementation",
        inputs=inputs or INPUTS,
        caller_session_id="caller",
        owner=owner,
        force=force,
    )


def record_in(store: CampaignStore, status: DispatchStatus, owner: Owner = ME) -> DispatchRecord:
    """A record of camp/job in ``status`` at attempt 1."""
    claimed = claim(store, owner)
    if status is DispatchStatus.PENDING:
        return claimed.record
    if status is DispatchStatus.FAILURE:
        return store.mark_failed("camp", "job", attempt=1, error="launch failed")
    if status is DispatchStatus.CANCELLED:
        return store.mark_cancelled("camp", "job", attempt=1, reason="cancelled")
    if status is DispatchStatus.INTERRUPTED:
        return store.mark_interrupted("camp", "job", attempt=1, reason="server stopped")
    running = store.mark_running("camp", "job", attempt=1, dispatched_session_id="session-1")
    if status is DispatchStatus.SUCCESS:
        return store.mark_succeeded("camp", "job", attempt=1, summary="merged", outputs={"pr": 7})
    return running


MARKS: dict[DispatchStatus, Callable[[CampaignStore], DispatchRecord]] = {
    DispatchStatus.RUNNING: lambda s: s.mark_running("camp", "job", attempt=1, dispatched_session_id="session-2"),
    DispatchStatus.SUCCESS: lambda s: s.mark_succeeded("camp", "job", attempt=1, summary="done"),
    DispatchStatus.FAILURE: lambda s: s.mark_failed("camp", "job", attempt=1, error="boom"),
    DispatchStatus.CANCELLED: lambda s: s.mark_cancelled("camp", "job", attempt=1, reason="stop"),
    DispatchStatus.INTERRUPTED: lambda s: s.mark_interrupted("camp", "job", attempt=1, reason="gone"),
}
ENDINGS = {DispatchStatus.FAILURE, DispatchStatus.CANCELLED, DispatchStatus.INTERRUPTED}
LEGAL_MARKS = {(DispatchStatus.PENDING, DispatchStatus.RUNNING)} | {
    (current, target)
    for current in (DispatchStatus.PENDING, DispatchStatus.RUNNING)
    for target in (*ENDINGS, DispatchStatus.SUCCESS)
    if (current, target) != (DispatchStatus.PENDING, DispatchStatus.SUCCESS)
}
MARK_CASES = [(current, target) for current in DispatchStatus for target in MARKS]


def test_the_store_satisfies_the_protocol(store: CampaignStore) -> None:
    typed: CampaignStore = store
    assert typed.get("camp", "job") is None


@pytest.mark.parametrize(("current", "target"), MARK_CASES, ids=[f"{a}->{b}" for a, b in MARK_CASES])
def test_a_mark_is_written_when_legal_and_refused_loudly_otherwise(
    store: CampaignStore, current: DispatchStatus, target: DispatchStatus
) -> None:
    before = record_in(store, current)
    if (current, target) in LEGAL_MARKS:
        assert MARKS[target](store).status is target
        return
    with pytest.raises(IllegalTransition) as refused:
        MARKS[target](store)
    assert f"from {current} to {target}" in str(refused.value)
    assert store.get("camp", "job") == before


def test_a_new_name_is_claimed_pending_at_attempt_one(store: CampaignStore) -> None:
    claimed = claim(store)
    assert (claimed.action, claimed.attempt, claimed.previous_status) == (ClaimAction.LAUNCH, 1, None)
    assert claimed.record.status is DispatchStatus.PENDING
    assert claimed.record.owner == ME
    assert claimed.record.inputs == INPUTS
    assert store.get("camp", "job") == claimed.record


def test_a_success_short_circuits_with_its_recorded_result(store: CampaignStore) -> None:
    done = record_in(store, DispatchStatus.SUCCESS)
    again = claim(store)
    assert again.action is ClaimAction.SHORT_CIRCUIT
    assert not again.inputs_changed
    assert again.record == done
    assert (done.dispatched_session_id, done.result_summary, done.outputs) == ("session-1", "merged", {"pr": 7})
    assert store.find_completed_dispatch("camp", "job") == done


def test_a_success_short_circuits_even_when_the_inputs_changed_and_says_so(store: CampaignStore) -> None:
    done = record_in(store, DispatchStatus.SUCCESS)
    again = claim(store, issue="43")
    assert again.action is ClaimAction.SHORT_CIRCUIT
    assert again.inputs_changed
    assert store.get("camp", "job") == done


def test_force_relaunches_a_success_at_the_next_attempt(store: CampaignStore) -> None:
    record_in(store, DispatchStatus.SUCCESS)
    forced = claim(store, force=True, issue="43")
    assert (forced.action, forced.attempt, forced.previous_status) == (ClaimAction.LAUNCH, 2, DispatchStatus.SUCCESS)
    assert forced.prior_session_id is None
    assert forced.record.inputs == {"issue": "43"}
    assert (forced.record.result_summary, forced.record.outputs) == (None, {})
    assert store.find_completed_dispatch("camp", "job") is None


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("status", [DispatchStatus.RUNNING, DispatchStatus.PENDING])
def test_a_job_with_a_live_owner_is_already_running_even_when_forced(
    store: CampaignStore, status: DispatchStatus, force: bool
) -> None:
    before = record_in(store, status)
    again = claim(store, force=force)
    assert again.action is ClaimAction.ALREADY_RUNNING
    assert again.record == before
    assert store.get("camp", "job") == before


def test_a_running_job_whose_owner_died_is_interrupted_and_relaunched(store: CampaignStore, dead_owner: Owner) -> None:
    running = record_in(store, DispatchStatus.RUNNING, dead_owner)
    store.record_run_started(
        RunRecord(
            run_id="session-1",
            kind=SessionKind.ORCHESTRATOR,
            dispatch_id=running.dispatch_id,
            owner=dead_owner,
            started_at=running.created_at,
        )
    )
    relaunched = claim(store)
    assert (relaunched.action, relaunched.attempt) == (ClaimAction.LAUNCH, 2)
    assert relaunched.previous_status is DispatchStatus.RUNNING
    assert relaunched.interrupted_owner == dead_owner
    assert relaunched.prior_session_id == "session-1"
    assert relaunched.record.owner == ME
    assert relaunched.record.dispatched_session_id == "session-1"
    assert "interrupted" in relaunched.reason
    run = store.get_run("session-1")
    assert run is not None
    assert run.status is RunStatus.INTERRUPTED


@pytest.mark.parametrize("status", [DispatchStatus.FAILURE, DispatchStatus.CANCELLED, DispatchStatus.INTERRUPTED])
def test_an_ended_job_that_did_not_succeed_is_relaunched_at_the_next_attempt(
    store: CampaignStore, status: DispatchStatus
) -> None:
    store_record = record_in(store, status)
    relaunched = claim(store)
    assert (relaunched.action, relaunched.attempt, relaunched.previous_status) == (ClaimAction.LAUNCH, 2, status)
    assert relaunched.record.status is DispatchStatus.PENDING
    assert relaunched.record.error is None
    assert relaunched.prior_session_id == store_record.dispatched_session_id


def test_a_pending_job_whose_claimer_died_is_relaunched(store: CampaignStore, dead_owner: Owner) -> None:
    record_in(store, DispatchStatus.PENDING, dead_owner)
    relaunched = claim(store)
    assert (relaunched.action, relaunched.attempt) == (ClaimAction.LAUNCH, 2)
    assert relaunched.previous_status is DispatchStatus.PENDING
    assert relaunched.interrupted_owner is None
    assert "died before launching" in relaunched.reason


def test_a_write_with_a_stale_attempt_is_refused(store: CampaignStore, dead_owner: Owner) -> None:
    record_in(store, DispatchStatus.RUNNING, dead_owner)
    assert claim(store).attempt == 2
    with pytest.raises(StaleAttempt, match="attempt 1 may not become success: the record is at attempt 2"):
        store.mark_succeeded("camp", "job", attempt=1, summary="late")
    with pytest.raises(StaleAttempt):
        store.mark_running("camp", "job", attempt=1, dispatched_session_id="late")
    running = store.mark_running("camp", "job", attempt=2, dispatched_session_id="session-2")
    assert (running.status, running.attempts, running.dispatched_session_id) == (
        DispatchStatus.RUNNING,
        2,
        "session-2",
    )


def test_a_mark_of_an_unknown_job_is_refused(store: CampaignStore) -> None:
    with pytest.raises(IllegalTransition, match="has no record"):
        store.mark_running("camp", "nothing", attempt=1, dispatched_session_id="s")


def test_success_keeps_its_result_and_usage(store: CampaignStore) -> None:
    claim(store)
    store.mark_running("camp", "job", attempt=1, dispatched_session_id="session-1")
    usage = SessionUsage(total=TokenUsage(input_tokens=10, output_tokens=5), by_model={"opus": TokenUsage(turns=2)})
    done = store.mark_succeeded("camp", "job", attempt=1, summary="merged", outputs={"pr": 7}, usage=usage)
    assert done.usage == usage
    assert done.started_at is not None
    assert done.finished_at is not None
    assert done.started_at <= done.finished_at


def test_campaigns_never_see_each_others_records(store: CampaignStore) -> None:
    for campaign in ("one", "two"):
        claimed = store.claim(campaign, "job", recipe="r", inputs={}, caller_session_id=None, owner=ME)
        assert (claimed.action, claimed.attempt) == (ClaimAction.LAUNCH, 1)
    store.mark_running("one", "job", attempt=1, dispatched_session_id="s1")
    store.mark_succeeded("one", "job", attempt=1, summary="done")
    assert store.find_completed_dispatch("two", "job") is None
    assert [record.campaign_id for record in store.list("one")] == ["one"]
    assert [record.status for record in store.list("two")] == [DispatchStatus.PENDING]
    assert store.list("two", status=DispatchStatus.SUCCESS) == []
    assert store.list("three") == []


def test_list_filters_by_status_and_orders_by_name(store: CampaignStore) -> None:
    for name in ("c", "a", "b"):
        claim(store, name=name)
    store.mark_failed("camp", "b", attempt=1, error="x")
    assert [record.name for record in store.list("camp")] == ["a", "b", "c"]
    assert [record.name for record in store.list("camp", status=DispatchStatus.PENDING)] == ["a", "c"]
