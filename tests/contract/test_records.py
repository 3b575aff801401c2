"""Runs, pipeline step executions and ends restored after the fact, the same on every store."""

from __future__ import annotations

import time

import pytest

from expeditor.errors import IllegalTransition, StaleAttempt
from expeditor.executor.models import SessionKind, Termination
from expeditor.state import (
    CampaignStore,
    DispatchRecord,
    DispatchStatus,
    Owner,
    RunRecord,
    RunStatus,
    StepExecution,
    StepStatus,
)
from expeditor.usage.models import SessionUsage, TokenUsage, UsageSource

ME = Owner.current()
GONE = Owner(pid=ME.pid, start_time=ME.start_time - 1000, host=ME.host)  # this pid, an earlier process


def run(run_id: str = "s-1", owner: Owner = ME, **fields: object) -> RunRecord:
    values: dict[str, object] = {"kind": SessionKind.SKILL, "owner": owner, "started_at": time.time(), **fields}
    return RunRecord.model_validate({"run_id": run_id, **values})


def test_a_run_round_trips_through_the_runs_table(store: CampaignStore) -> None:
    started = store.record_run_started(
        run(
            kind=SessionKind.PIPELINE,
            caller_session_id="caller",
            campaign_id="camp",
            job_name="job",
            dispatch_id="d-1",
            attempt=2,
            step_sequence=3,
            transcript_path="/tmp/t.jsonl",
        )
    )
    assert (started.launch, started.status) == (1, RunStatus.RUNNING)
    assert store.get_run("s-1") == started
    usage = SessionUsage(total=TokenUsage(output_tokens=9), source=UsageSource.RESULT_EVENT)
    finished = store.record_run_finished(
        "s-1", status=RunStatus.FAILURE, termination=Termination.STALE, usage=usage, reason="silent for 20 min"
    )
    assert (finished.status, finished.termination, finished.usage) == (RunStatus.FAILURE, Termination.STALE, usage)
    assert finished.finished_at is not None
    assert store.get_run("s-1") == finished
    assert store.list_runs("camp") == [finished]
    assert store.list_runs("camp", job_name="job", dispatch_id="d-1", status=RunStatus.FAILURE) == [finished]
    assert store.list_runs("other") == []


def test_a_resumed_session_is_a_second_launch_of_the_same_run(store: CampaignStore) -> None:
    store.record_run_started(run())
    with pytest.raises(IllegalTransition, match="still running"):
        store.record_run_started(run())
    store.record_run_finished(
        "s-1", status=RunStatus.CANCELLED, termination=Termination.CANCELLED, usage=SessionUsage(), reason=None
    )
    resumed = store.record_run_started(run())
    assert resumed.launch == 2
    assert [(r.launch, r.status) for r in store.list_runs()] == [(1, RunStatus.CANCELLED), (2, RunStatus.RUNNING)]
    assert store.get_run("s-1") == resumed


def test_a_run_left_running_by_a_dead_owner_is_interrupted_when_resumed(store: CampaignStore) -> None:
    store.record_run_started(run(owner=GONE))
    resumed = store.record_run_started(run())
    assert resumed.launch == 2
    first = store.list_runs()[0]
    assert first.status is RunStatus.INTERRUPTED
    assert first.reason is not None
    assert "gone" in first.reason


def test_a_run_ends_once(store: CampaignStore) -> None:
    with pytest.raises(IllegalTransition, match="never recorded"):
        store.record_run_finished("nope", status=RunStatus.SUCCESS, termination=None, usage=SessionUsage(), reason=None)
    store.record_run_started(run())
    store.record_run_finished("s-1", status=RunStatus.SUCCESS, termination=None, usage=SessionUsage(), reason=None)
    with pytest.raises(IllegalTransition, match="from success to failure"):
        store.record_run_finished("s-1", status=RunStatus.FAILURE, termination=None, usage=SessionUsage(), reason=None)


def test_the_reaper_interrupts_only_runs_whose_owner_is_gone(store: CampaignStore) -> None:
    store.record_run_started(run("alive"))
    store.record_run_started(run("orphan", owner=GONE))
    reaped = store.interrupt_runs_of_dead_owners()
    assert [record.run_id for record in reaped] == ["orphan"]
    assert {record.run_id: record.status for record in store.list_runs()} == {
        "alive": RunStatus.RUNNING,
        "orphan": RunStatus.INTERRUPTED,
    }
    assert store.interrupt_runs_of_dead_owners() == []


def step(sequence: int, name: str, status: StepStatus = StepStatus.SUCCESS, **captures: str) -> StepExecution:
    return StepExecution(
        campaign_id="camp", job_name="job", sequence=sequence, step=name, status=status, captures=captures
    )


def test_step_executions_are_listed_in_order_of_sequence(store: CampaignStore) -> None:
    for execution in (step(3, "test", StepStatus.FAILURE), step(1, "plan", plan="p.md"), step(2, "test")):
        store.record_step(execution)
    store.record_step(step(1, "plan", plan="p.md").model_copy(update={"campaign_id": "other"}))
    listed = store.list_steps("camp", "job")
    assert [(s.sequence, s.step, s.status) for s in listed] == [
        (1, "plan", StepStatus.SUCCESS),
        (2, "test", StepStatus.SUCCESS),
        (3, "test", StepStatus.FAILURE),
    ]
    assert listed[0].captures == {"plan": "p.md"}


def test_recording_a_sequence_again_replaces_it(store: CampaignStore) -> None:
    store.record_step(step(1, "test", StepStatus.RUNNING))
    store.record_step(step(1, "test", StepStatus.SUCCESS, result="green"))
    assert store.list_steps("camp", "job") == [step(1, "test", StepStatus.SUCCESS, result="green")]
    assert store.clear_steps("camp", "job") == 1
    assert store.list_steps("camp", "job") == []


def claimed(store: CampaignStore, owner: Owner = ME, name: str = "job") -> DispatchRecord:
    return store.claim("camp", name, recipe="r", inputs={"a": "1"}, caller_session_id=None, owner=owner).record


def ended(record: DispatchRecord, status: DispatchStatus = DispatchStatus.SUCCESS) -> DispatchRecord:
    now = time.time()
    update = {"status": status, "dispatched_session_id": "s-1", "result_summary": "merged", "finished_at": now}
    return record.model_copy(update={**update, "started_at": now, "updated_at": now})


def finished(started: RunRecord) -> RunRecord:
    return started.model_copy(
        update={"status": RunStatus.SUCCESS, "termination": Termination.COMPLETED, "finished_at": time.time()}
    )


@pytest.mark.parametrize("reached", [DispatchStatus.PENDING, DispatchStatus.RUNNING])
def test_an_unfinished_attempt_takes_the_restored_end(store: CampaignStore, reached: DispatchStatus) -> None:
    record = claimed(store)
    if reached is DispatchStatus.RUNNING:
        store.mark_running("camp", "job", attempt=1, dispatched_session_id="s-1")
    assert store.restore_dispatch(ended(record, DispatchStatus.FAILURE)).status is DispatchStatus.FAILURE
    stored = store.get("camp", "job")
    assert stored is not None
    assert stored.status is DispatchStatus.FAILURE


def test_an_end_already_recorded_stands_and_another_attempt_is_not_overwritten(store: CampaignStore) -> None:
    record = claimed(store)
    store.mark_failed("camp", "job", attempt=1, error="launch failed")
    assert store.restore_dispatch(ended(record)).status is DispatchStatus.FAILURE
    claimed(store)  # attempt 2, another claimer's
    with pytest.raises(StaleAttempt, match="attempt 2"):
        store.restore_dispatch(ended(record))
    with pytest.raises(IllegalTransition, match="only be restored with its end"):
        store.restore_dispatch(record)


def test_a_run_is_restored_whole_closed_or_left_as_it_ended(store: CampaignStore) -> None:
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


def test_a_restored_launch_whose_number_another_launch_holds_becomes_the_next(store: CampaignStore) -> None:
    first = store.record_run_started(run())
    store.record_run_finished("s-1", status=RunStatus.SUCCESS, termination=None, usage=SessionUsage(), reason=None)
    never_recorded = run(started_at=first.started_at + 5)  # its start was lost: it still says launch 1
    assert store.restore_run(finished(never_recorded)).launch == 2
    assert [(r.launch, r.status) for r in store.list_runs()] == [(1, RunStatus.SUCCESS), (2, RunStatus.SUCCESS)]


def test_start_up_interrupts_the_unfinished_dispatches_of_dead_owners_with_their_runs(
    store: CampaignStore,
) -> None:
    running = claimed(store, GONE, "running")
    store.mark_running("camp", "running", attempt=1, dispatched_session_id="s-1")
    store.record_run_started(run("s-1", GONE, campaign_id="camp", job_name="running", dispatch_id=running.dispatch_id))
    claimed(store, GONE, "pending")
    claimed(store, ME, "mine")
    interrupted = store.interrupt_dispatches_of_dead_owners()
    assert sorted(record.name for record in interrupted) == ["pending", "running"]
    assert {record.name: record.status for record in store.list("camp")} == {
        "mine": DispatchStatus.PENDING,
        "pending": DispatchStatus.INTERRUPTED,
        "running": DispatchStatus.INTERRUPTED,
    }
    (orphaned_run,) = store.list_runs("camp")
    assert orphaned_run.status is RunStatus.INTERRUPTED
    assert store.interrupt_dispatches_of_dead_owners() == []


def test_a_lost_dispatch_is_inserted_whole_with_its_end(store: CampaignStore) -> None:
    record = claimed(store)
    lost = ended(record).model_copy(update={"name": "lost", "dispatch_id": "d-lost"})
    assert store.restore_dispatch(lost) == lost
    stored = store.get("camp", "lost")
    assert stored is not None
    assert (stored.status, stored.dispatch_id, stored.attempts) == (DispatchStatus.SUCCESS, "d-lost", 1)
    assert (stored.inputs, stored.result_summary, stored.owner) == ({"a": "1"}, "merged", ME)
    assert store.find_completed_dispatch("camp", "lost") == stored


def test_list_runs_filters_by_every_field_given(store: CampaignStore) -> None:
    store.record_run_started(run("a", campaign_id="one", job_name="x", caller_session_id="c1"))
    store.record_run_started(run("b", campaign_id="one", job_name="y", caller_session_id="c2"))
    store.record_run_started(run("c", campaign_id="two", job_name="x", caller_session_id="c1"))
    assert [r.run_id for r in store.list_runs("one")] == ["a", "b"]
    assert [r.run_id for r in store.list_runs(job_name="x")] == ["a", "c"]
    assert [r.run_id for r in store.list_runs("one", caller_session_id="c1")] == ["a"]
    assert [r.run_id for r in store.list_runs(status=RunStatus.RUNNING)] == ["a", "b", "c"]
    assert store.list_runs(status=RunStatus.SUCCESS) == []


def test_clear_steps_forgets_from_a_sequence_on(store: CampaignStore) -> None:
    for sequence in (1, 2, 3):
        store.record_step(step(sequence, f"s{sequence}"))
    store.record_step(step(1, "plan").model_copy(update={"job_name": "other"}))
    assert store.clear_steps("camp", "job", from_sequence=2) == 2
    assert [s.sequence for s in store.list_steps("camp", "job")] == [1]
    assert [s.step for s in store.list_steps("camp", "other")] == ["plan"]
    assert store.clear_steps("camp", "nothing") == 0
