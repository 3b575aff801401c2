"""Rows of the PostgreSQL store and the records they hold: reading and writing them whole.

Every function here runs inside a transaction its caller owns, on a connection whose rows are dicts
and whose ``search_path`` is the store's schema. JSON fields are ``jsonb``: written as ``Jsonb`` and
read back as Python values, which the models validate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from expeditor.state.models import DispatchRecord, Owner, RunRecord, StepExecution
from expeditor.times import STORAGE_CONTEXT

__all__ = [
    "PgConnection",
    "dispatch_from_row",
    "insert_dispatch_if_new",
    "latest_run",
    "read_dispatch",
    "read_run_launch",
    "run_from_row",
    "step_from_row",
    "upsert_step",
    "write_dispatch",
    "write_run",
]

PgConnection = psycopg.Connection[dict[str, Any]]

_OWNER_COLUMNS = ("owner_pid", "owner_start_time", "owner_host")
_DISPATCH_JSON = frozenset({"inputs", "outputs", "usage"})
_RUN_JSON = frozenset({"usage", "evidence"})
_STEP_JSON = frozenset({"captures", "usage"})


def _columns(model: type[DispatchRecord | RunRecord | StepExecution]) -> tuple[str, ...]:
    fields = tuple(name for name in model.model_fields if name != "owner")
    return fields + (_OWNER_COLUMNS if "owner" in model.model_fields else ())


_DISPATCH_COLUMNS = _columns(DispatchRecord)
_RUN_COLUMNS = _columns(RunRecord)
_STEP_COLUMNS = _columns(StepExecution)


def _insert(table: str, columns: Sequence[str]) -> sql.Composed:
    return sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(column) for column in columns),
        sql.SQL(", ").join(sql.Placeholder() for _ in columns),
    )


def _upsert(table: str, columns: Sequence[str], key_length: int) -> sql.Composed:
    """Insert a whole row, or overwrite every column but its key (the first ``key_length`` columns)."""
    key, rest = columns[:key_length], columns[key_length:]
    return sql.SQL("{} ON CONFLICT ({}) DO UPDATE SET {}").format(
        _insert(table, columns),
        sql.SQL(", ").join(sql.Identifier(column) for column in key),
        sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(column)) for column in rest),
    )


_WRITE_DISPATCH = _upsert("dispatches", _DISPATCH_COLUMNS, 2)
_INSERT_NEW_DISPATCH = _insert("dispatches", _DISPATCH_COLUMNS) + sql.SQL(
    " ON CONFLICT (campaign_id, name) DO NOTHING RETURNING dispatch_id"
)
_WRITE_RUN = _upsert("runs", _RUN_COLUMNS, 2)
_UPSERT_STEP = _upsert("step_executions", _STEP_COLUMNS, 3)


def _values(
    record: DispatchRecord | RunRecord | StepExecution, columns: Sequence[str], json: frozenset[str]
) -> list[Any]:
    dumped = record.model_dump(mode="json", context=STORAGE_CONTEXT)
    owner = dumped.pop("owner", None)
    if isinstance(owner, dict):
        dumped.update(owner_pid=owner["pid"], owner_start_time=owner["start_time"], owner_host=owner["host"])
    else:
        dumped.update(owner_pid=None, owner_start_time=None, owner_host=None)
    return [
        Jsonb(dumped[column]) if column in json and dumped[column] is not None else dumped[column] for column in columns
    ]


def _owner(row: Mapping[str, Any]) -> Owner | None:
    pid, start_time, host = (row[column] for column in _OWNER_COLUMNS)
    if pid is None or start_time is None or host is None:
        return None
    return Owner(pid=pid, start_time=start_time, host=host)


def _fields(row: Mapping[str, Any]) -> dict[str, Any]:
    return {column: value for column, value in row.items() if column not in _OWNER_COLUMNS}


def dispatch_from_row(row: Mapping[str, Any]) -> DispatchRecord:
    return DispatchRecord.model_validate({**_fields(row), "owner": _owner(row)})


def run_from_row(row: Mapping[str, Any]) -> RunRecord:
    return RunRecord.model_validate({**_fields(row), "owner": _owner(row)})


def step_from_row(row: Mapping[str, Any]) -> StepExecution:
    return StepExecution.model_validate(dict(row))


def read_dispatch(
    connection: PgConnection, campaign_id: str, name: str, *, for_update: bool = False
) -> DispatchRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    sql = f"SELECT * FROM dispatches WHERE campaign_id = %s AND name = %s{lock}"
    row = connection.execute(sql, (campaign_id, name)).fetchone()
    return None if row is None else dispatch_from_row(row)


def insert_dispatch_if_new(connection: PgConnection, record: DispatchRecord) -> bool:
    """Insert ``record`` unless the job has a record already; whether it was inserted."""
    values = _values(record, _DISPATCH_COLUMNS, _DISPATCH_JSON)
    return connection.execute(_INSERT_NEW_DISPATCH, values).fetchone() is not None


def write_dispatch(connection: PgConnection, record: DispatchRecord) -> None:
    """Insert the whole record, or replace every field of the job's record with it."""
    connection.execute(_WRITE_DISPATCH, _values(record, _DISPATCH_COLUMNS, _DISPATCH_JSON))


def latest_run(connection: PgConnection, run_id: str, *, for_update: bool = False) -> RunRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    sql = f"SELECT * FROM runs WHERE run_id = %s ORDER BY launch DESC LIMIT 1{lock}"
    row = connection.execute(sql, (run_id,)).fetchone()
    return None if row is None else run_from_row(row)


def read_run_launch(connection: PgConnection, run_id: str, launch: int) -> RunRecord | None:
    row = connection.execute("SELECT * FROM runs WHERE run_id = %s AND launch = %s FOR UPDATE", (run_id, launch))
    found = row.fetchone()
    return None if found is None else run_from_row(found)


def write_run(connection: PgConnection, run: RunRecord) -> None:
    """Insert the launch, or replace every field of the one recorded under its (run id, launch)."""
    connection.execute(_WRITE_RUN, _values(run, _RUN_COLUMNS, _RUN_JSON))


def upsert_step(connection: PgConnection, step: StepExecution) -> None:
    """Insert the execution, or replace the one recorded under its (campaign, job, sequence)."""
    connection.execute(_UPSERT_STEP, _values(step, _STEP_COLUMNS, _STEP_JSON))
