"""Runs, pipeline step executions and the schema of the SQLite store, on real database files."""

from __future__ import annotations

import logging
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from expeditor.errors import ClaimRefused, IllegalTransition
from expeditor.executor.models import SessionKind, Termination
from expeditor.state import (
    Owner,
    RunRecord,
    RunStatus,
    SqliteCampaignStore,
    StepExecution,
    StepStatus,
)
from expeditor.state.schema import SCHEMA_VERSION
from expeditor.usage.models import SessionUsage, TokenUsage, UsageSource

ME = Owner.current()
GONE = Owner(pid=ME.pid, start_time=ME.start_time - 1000, host=socket.gethostname())  # this pid, an earlier process


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteCampaignStore]:
    opened = SqliteCampaignStore(tmp_path / "state.sqlite3", busy_timeout=1.0)
    yield opened
    opened.close()


def run(run_id: str = "s-1", owner: Owner = ME, **fields: object) -> RunRecord:
    values: dict[str, object] = {"kind": SessionKind.SKILL, "owner": owner, "started_at": time.time(), **fields}
    return RunRecord.model_validate({"run_id": run_id, **values})


def test_a_run_round_trips_through_the_runs_table(store: SqliteCampaignStore) -> None:
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


def test_a_resumed_session_is_a_second_launch_of_the_same_run(store: SqliteCampaignStore) -> None:
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


def test_a_run_left_running_by_a_dead_owner_is_interrupted_when_resumed(store: SqliteCampaignStore) -> None:
    store.record_run_started(run(owner=GONE))
    resumed = store.record_run_started(run())
    assert resumed.launch == 2
    first = store.list_runs()[0]
    assert first.status is RunStatus.INTERRUPTED
    assert first.reason is not None
    assert "gone" in first.reason


def test_a_run_ends_once(store: SqliteCampaignStore) -> None:
    with pytest.raises(IllegalTransition, match="never recorded"):
        store.record_run_finished("nope", status=RunStatus.SUCCESS, termination=None, usage=SessionUsage(), reason=None)
    store.record_run_started(run())
    store.record_run_finished("s-1", status=RunStatus.SUCCESS, termination=None, usage=SessionUsage(), reason=None)
    with pytest.raises(IllegalTransition, match="from success to failure"):
        store.record_run_finished("s-1", status=RunStatus.FAILURE, termination=None, usage=SessionUsage(), reason=None)


def test_the_reaper_interrupts_only_runs_whose_owner_is_gone(store: SqliteCampaignStore) -> None:
    store.record_run_started(run("alive"))
    store.record_run_started(run("orphan", owner=GONE))
    store.record_run_started(run("elsewhere", owner=Owner(pid=1, start_time=1.0, host="other.invalid")))
    reaped = store.interrupt_runs_of_dead_owners()
    assert [record.run_id for record in reaped] == ["orphan"]
    assert {record.run_id: record.status for record in store.list_runs()} == {
        "alive": RunStatus.RUNNING,
        "orphan": RunStatus.INTERRUPTED,
        "elsewhere": RunStatus.RUNNING,
    }
    assert store.interrupt_runs_of_dead_owners() == []


def step(sequence: int, name: str, status: StepStatus = StepStatus.SUCCESS, **captures: str) -> StepExecution:
    return StepExecution(
        campaign_id="camp", job_name="job", sequence=sequence, step=name, status=status, captures=captures
    )


def test_step_executions_are_listed_in_order_of_sequence(store: SqliteCampaignStore) -> None:
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


def test_recording_a_sequence_again_replaces_it(store: SqliteCampaignStore) -> None:
    store.record_step(step(1, "test", StepStatus.RUNNING))
    store.record_step(step(1, "test", StepStatus.SUCCESS, result="green"))
    assert store.list_steps("camp", "job") == [step(1, "test", StepStatus.SUCCESS, result="green")]
    assert store.clear_steps("camp", "job") == 1
    assert store.list_steps("camp", "job") == []


def test_the_schema_is_migrated_once_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    for _ in range(2):
        opened = SqliteCampaignStore(path)
        opened.record_step(step(1, "plan"))
        opened.close()
    with sqlite3.connect(path) as connection:
        versions = connection.execute("SELECT version FROM schema_version").fetchall()
        mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    connection.close()
    assert versions == [(version,) for version in range(1, SCHEMA_VERSION + 1)]
    assert mode == "wal"


def test_a_store_from_a_newer_expeditor_is_not_touched(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.sqlite3"
    older = SqliteCampaignStore(path)
    older.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=ME)
    older.close()
    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO schema_version VALUES (99, 0)")
    connection.close()
    store = SqliteCampaignStore(path)
    with caplog.at_level(logging.WARNING):
        assert store.find_completed_dispatch("camp", "job") is None
    assert "schema version 99" in caplog.text
    with pytest.raises(ClaimRefused, match="newer"):
        store.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=ME)
    store.close()


def test_a_lookup_of_a_store_that_does_not_exist_answers_nothing_and_creates_nothing(tmp_path: Path) -> None:
    store = SqliteCampaignStore(tmp_path / "home" / "state.sqlite3")
    assert store.find_completed_dispatch("camp", "job") is None
    assert store.list("camp") == []
    assert store.list_steps("camp", "job") == []
    assert not (tmp_path / "home").exists()
    store.close()
