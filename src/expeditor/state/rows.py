"""Rows of the SQLite store and the records they hold: reading, inserting and closing them.

Every function here runs inside a transaction (or a single statement) its caller owns.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from expeditor.executor.models import Termination
from expeditor.state.models import DispatchRecord, Owner, RunEvidence, RunRecord, RunStatus, StepExecution
from expeditor.times import STORAGE_CONTEXT
from expeditor.usage.models import SessionUsage

__all__ = [
    "close_run",
    "dispatch_from_row",
    "dump_json",
    "insert_run",
    "latest_run",
    "read_dispatch",
    "read_run_launch",
    "run_from_row",
    "step_from_row",
    "upsert_step",
    "usage_text",
    "write_dispatch",
    "write_run",
]

_DISPATCH = "SELECT * FROM dispatches WHERE campaign_id = ? AND name = ?"
_LATEST_RUN = "SELECT * FROM runs WHERE run_id = ? ORDER BY launch DESC LIMIT 1"
_RUN_LAUNCH = "SELECT * FROM runs WHERE run_id = ? AND launch = ?"
_DISPATCH_COLUMNS = (
    "campaign_id",
    "name",
    "dispatch_id",
    "status",
    "attempts",
    "recipe",
    "inputs",
    "inputs_hash",
    "caller_session_id",
    "dispatched_session_id",
    "result_summary",
    "outputs",
    "usage",
    "error",
    "owner_pid",
    "owner_start_time",
    "owner_host",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "resume_session_id",
    "queue_job_id",
    "cwd",
    "stale_threshold",
    "worktree",
    "branch",
    "isolation",
)


def _upsert(table: str, columns: tuple[str, ...], key_length: int) -> str:
    """Insert a whole row, or overwrite every column but its key (the first ``key_length`` columns)."""
    key, rest = columns[:key_length], columns[key_length:]
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET " + ", ".join(f"{column} = excluded.{column}" for column in rest)
    )


_WRITE_DISPATCH = _upsert("dispatches", _DISPATCH_COLUMNS, 2)
_STEP_COLUMNS = (
    "campaign_id",
    "job_name",
    "sequence",
    "step",
    "status",
    "captures",
    "run_id",
    "started_at",
    "finished_at",
    "usage",
    "attempts",
    "reason",
)
_UPSERT_STEP = _upsert("step_executions", _STEP_COLUMNS, 3)
_RUN_COLUMNS = (
    "run_id",
    "launch",
    "kind",
    "status",
    "caller_session_id",
    "campaign_id",
    "job_name",
    "dispatch_id",
    "attempt",
    "step_sequence",
    "termination",
    "usage",
    "reason",
    "transcript_path",
    "owner_pid",
    "owner_start_time",
    "owner_host",
    "started_at",
    "finished_at",
    "updated_at",
    "label",
    "model",
    "api_base_url",
    "loc_changed",
    "evidence",
    "last_moved_at",
)
_WRITE_RUN = _upsert("runs", _RUN_COLUMNS, 2)
_INSERT_RUN = f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({', '.join('?' * len(_RUN_COLUMNS))})"


def dump_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def usage_text(usage: SessionUsage | None) -> str | None:
    return None if usage is None else usage.model_dump_json()


def _owner(pid: int | None, start_time: float | None, host: str | None) -> Owner | None:
    if pid is None or start_time is None or host is None:
        return None
    return Owner(pid=pid, start_time=start_time, host=host)


def dispatch_from_row(row: sqlite3.Row) -> DispatchRecord:
    usage = row["usage"]
    return DispatchRecord(
        campaign_id=row["campaign_id"],
        name=row["name"],
        dispatch_id=row["dispatch_id"],
        status=row["status"],
        attempts=row["attempts"],
        recipe=row["recipe"],
        inputs=json.loads(row["inputs"]),
        inputs_hash=row["inputs_hash"],
        caller_session_id=row["caller_session_id"],
        dispatched_session_id=row["dispatched_session_id"],
        result_summary=row["result_summary"],
        outputs=json.loads(row["outputs"]),
        usage=None if usage is None else SessionUsage.model_validate_json(usage),
        error=row["error"],
        owner=_owner(row["owner_pid"], row["owner_start_time"], row["owner_host"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        resume_session_id=row["resume_session_id"],
        queue_job_id=row["queue_job_id"],
        cwd=row["cwd"],
        stale_threshold=row["stale_threshold"],
        worktree=row["worktree"],
        branch=row["branch"],
        isolation=row["isolation"],
    )


def read_dispatch(connection: sqlite3.Connection, campaign_id: str, name: str) -> DispatchRecord | None:
    row = connection.execute(_DISPATCH, (campaign_id, name)).fetchone()
    return None if row is None else dispatch_from_row(row)


def write_dispatch(connection: sqlite3.Connection, record: DispatchRecord) -> None:
    """Insert the whole record, or replace every field of the job's record with it."""
    owner = record.owner
    values = {
        **record.model_dump(mode="json", exclude={"owner", "usage", "inputs", "outputs"}, context=STORAGE_CONTEXT),
        "inputs": dump_json(record.inputs),
        "outputs": dump_json(record.outputs),
        "usage": usage_text(record.usage),
        "owner_pid": None if owner is None else owner.pid,
        "owner_start_time": None if owner is None else owner.start_time,
        "owner_host": None if owner is None else owner.host,
    }
    connection.execute(_WRITE_DISPATCH, [values[column] for column in _DISPATCH_COLUMNS])


def run_from_row(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        launch=row["launch"],
        kind=row["kind"],
        status=row["status"],
        caller_session_id=row["caller_session_id"],
        campaign_id=row["campaign_id"],
        job_name=row["job_name"],
        dispatch_id=row["dispatch_id"],
        attempt=row["attempt"],
        step_sequence=row["step_sequence"],
        termination=row["termination"],
        usage=SessionUsage.model_validate_json(row["usage"]),
        reason=row["reason"],
        transcript_path=row["transcript_path"],
        owner=Owner(pid=row["owner_pid"], start_time=row["owner_start_time"], host=row["owner_host"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        updated_at=row["updated_at"],
        label=row["label"],
        model=row["model"],
        api_base_url=row["api_base_url"],
        loc_changed=row["loc_changed"],
        evidence=None if row["evidence"] is None else RunEvidence.model_validate_json(row["evidence"]),
        last_moved_at=row["last_moved_at"],
    )


def latest_run(connection: sqlite3.Connection, run_id: str) -> RunRecord | None:
    row = connection.execute(_LATEST_RUN, (run_id,)).fetchone()
    return None if row is None else run_from_row(row)


def read_run_launch(connection: sqlite3.Connection, run_id: str, launch: int) -> RunRecord | None:
    row = connection.execute(_RUN_LAUNCH, (run_id, launch)).fetchone()
    return None if row is None else run_from_row(row)


def insert_run(connection: sqlite3.Connection, run: RunRecord) -> None:
    connection.execute(_INSERT_RUN, _run_values(run))


def write_run(connection: sqlite3.Connection, run: RunRecord) -> None:
    """Insert the launch, or replace every field of the one recorded under its (run id, launch)."""
    connection.execute(_WRITE_RUN, _run_values(run))


def _run_values(run: RunRecord) -> list[object]:
    values = run.model_dump(mode="json", exclude={"owner", "usage", "evidence"}, context=STORAGE_CONTEXT)
    values.update(
        usage=run.usage.model_dump_json(),
        evidence=None if run.evidence is None else run.evidence.model_dump_json(),
        owner_pid=run.owner.pid,
        owner_start_time=run.owner.start_time,
        owner_host=run.owner.host,
    )
    return [values[column] for column in _RUN_COLUMNS]


def close_run(
    connection: sqlite3.Connection,
    run: RunRecord,
    status: RunStatus,
    termination: Termination | None,
    usage: SessionUsage,
    reason: str | None,
    now: float,
    loc_changed: int | None = None,
    evidence: RunEvidence | None = None,
) -> RunRecord:
    """End one launch of a run (the caller checked that it is running)."""
    connection.execute(
        "UPDATE runs SET status = ?, termination = ?, usage = ?, reason = ?, loc_changed = ?, evidence = ?, "
        "finished_at = ?, updated_at = ? WHERE run_id = ? AND launch = ?",
        (
            status.value,
            None if termination is None else termination.value,
            usage.model_dump_json(),
            reason,
            loc_changed,
            None if evidence is None else evidence.model_dump_json(),
            now,
            now,
            run.run_id,
            run.launch,
        ),
    )
    changes = {
        "status": status,
        "termination": termination,
        "usage": usage,
        "reason": reason,
        "loc_changed": loc_changed,
        "evidence": evidence,
    }
    return run.model_copy(update={**changes, "finished_at": now, "updated_at": now})


def step_from_row(row: sqlite3.Row) -> StepExecution:
    return StepExecution(
        campaign_id=row["campaign_id"],
        job_name=row["job_name"],
        sequence=row["sequence"],
        step=row["step"],
        status=row["status"],
        captures=json.loads(row["captures"]),
        run_id=row["run_id"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        usage=None if row["usage"] is None else SessionUsage.model_validate_json(row["usage"]),
        attempts=row["attempts"],
        reason=row["reason"],
    )


def upsert_step(connection: sqlite3.Connection, step: StepExecution) -> None:
    """Insert the execution, or replace the one recorded under its (campaign, job, sequence)."""
    values = {
        **step.model_dump(mode="json", exclude={"captures", "usage"}, context=STORAGE_CONTEXT),
        "captures": dump_json(step.captures),
        "usage": usage_text(step.usage),
    }
    connection.execute(_UPSERT_STEP, [values[column] for column in _STEP_COLUMNS])
