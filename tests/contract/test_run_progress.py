"""``record_run_progress``, the same on every store: only a running latest launch takes a run's figures so far."""

from __future__ import annotations

import time

from expeditor.executor.models import SessionKind, Termination
from expeditor.state import CampaignStore, Owner, RunRecord, RunStatus
from expeditor.usage.models import SessionUsage, TokenUsage, UsageSource

ME = Owner.current()
SO_FAR = SessionUsage(
    total=TokenUsage(input_tokens=11, output_tokens=7, turns=1),
    by_model={"claude-sonnet-4-5": TokenUsage(input_tokens=11, output_tokens=7, turns=1)},
    source=UsageSource.TRANSCRIPT,
    partial=True,
)
FINAL = SessionUsage(total=TokenUsage(input_tokens=20, output_tokens=9, turns=2), source=UsageSource.RESULT_EVENT)


def run(run_id: str, **fields: object) -> RunRecord:
    values: dict[str, object] = {"kind": SessionKind.SKILL, "owner": ME, "started_at": time.time(), **fields}
    return RunRecord.model_validate({"run_id": run_id, **values})


def test_a_running_run_takes_its_figures_so_far_and_when_it_last_moved(store: CampaignStore) -> None:
    started = store.record_run_started(run("live"))
    assert started.last_moved_at is None
    moved = time.time() - 5
    assert store.record_run_progress("live", usage=SO_FAR, last_moved=moved)
    stored = store.get_run("live")
    assert stored is not None
    assert (stored.status, stored.usage, stored.last_moved_at) == (RunStatus.RUNNING, SO_FAR, moved)
    assert stored.updated_at is not None
    assert started.updated_at is not None
    assert stored.updated_at >= started.updated_at
    # Later progress replaces the earlier; a session that has not moved yet is recorded as such.
    assert store.record_run_progress("live", usage=FINAL, last_moved=None)
    again = store.get_run("live")
    assert again is not None
    assert (again.usage, again.last_moved_at) == (FINAL, None)


def test_progress_never_overwrites_an_end_nor_creates_a_run(store: CampaignStore) -> None:
    store.record_run_started(run("ended"))
    store.record_run_finished(
        "ended", status=RunStatus.SUCCESS, termination=Termination.COMPLETED, usage=FINAL, reason=None
    )
    assert not store.record_run_progress("ended", usage=SO_FAR, last_moved=time.time())
    ended = store.get_run("ended")
    assert ended is not None
    assert (ended.status, ended.usage) == (RunStatus.SUCCESS, FINAL)
    assert not store.record_run_progress("never-started", usage=SO_FAR, last_moved=None)
    assert store.get_run("never-started") is None


def test_progress_goes_to_the_latest_launch_only(store: CampaignStore) -> None:
    store.record_run_started(run("resumed"))
    store.record_run_finished(
        "resumed", status=RunStatus.FAILURE, termination=Termination.CRASHED, usage=FINAL, reason="crashed"
    )
    store.record_run_started(run("resumed"))
    assert store.record_run_progress("resumed", usage=SO_FAR, last_moved=time.time())
    first, second = (recorded for recorded in store.list_runs() if recorded.run_id == "resumed")
    assert (first.launch, first.status, first.usage) == (1, RunStatus.FAILURE, FINAL)
    assert (second.launch, second.status, second.usage) == (2, RunStatus.RUNNING, SO_FAR)


def test_the_end_replaces_the_figures_so_far_and_keeps_when_it_last_moved(store: CampaignStore) -> None:
    store.record_run_started(run("to-end"))
    moved = time.time()
    store.record_run_progress("to-end", usage=SO_FAR, last_moved=moved)
    ended = store.record_run_finished(
        "to-end", status=RunStatus.SUCCESS, termination=Termination.COMPLETED, usage=FINAL, reason=None
    )
    assert ended.usage == FINAL
    stored = store.get_run("to-end")
    assert stored is not None
    assert (stored.usage, stored.last_moved_at) == (FINAL, moved)
