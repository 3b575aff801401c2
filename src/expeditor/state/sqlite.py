"""``SqliteCampaignStore``: the embedded campaign store, one file at ``<home>/state.sqlite3``.

Every transition is one ``BEGIN IMMEDIATE`` transaction that reads the record, checks the
move against ``LEGAL_TRANSITIONS`` and the attempt fence, and writes it; SQLite's write lock
makes that read-check-write atomic across threads and processes. Threads: see
``expeditor.state.connections`` (pooled connections, one per call in flight).

Owner liveness: SQLite is one machine. An owner on this host is alive while a process with
its pid and start time exists; an owner recorded under another host name cannot be checked
from here and is taken to be alive, so its records are never launched twice (a shared store
across hosts is the PostgreSQL store's job, with leases).
"""

from __future__ import annotations

import builtins
import logging
import socket
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from expeditor.errors import ClaimRefused, InvalidInput, StoreUnavailable
from expeditor.executor.models import Termination
from expeditor.process_identity import process_alive
from expeditor.state.budget_rows import BudgetSql, budget_from_row
from expeditor.state.claims import ClaimRequest, check_run_end, fenced_transition, next_launch, short_circuit
from expeditor.state.connections import SqliteFile
from expeditor.state.dispatch_marks import DispatchMarks
from expeditor.state.models import (
    Budget,
    Claim,
    DispatchRecord,
    DispatchStatus,
    Owner,
    RunEvidence,
    RunRecord,
    RunStatus,
    StepExecution,
)
from expeditor.state.recovery import interrupt_dispatches_in, restore_dispatch_in, restore_run_in
from expeditor.state.rows import (
    close_run,
    dispatch_from_row,
    insert_run,
    latest_run,
    read_dispatch,
    run_from_row,
    step_from_row,
    upsert_step,
    write_dispatch,
)
from expeditor.state.sqlite_claims import claim_in
from expeditor.state.store import OnLaunchHook
from expeditor.usage.models import SessionUsage

__all__ = ["SqliteCampaignStore"]

logger = logging.getLogger(__name__)

_BUDGETS = BudgetSql("?")

T = TypeVar("T")


class SqliteCampaignStore(DispatchMarks):
    """The default ``CampaignStore``: WAL, a busy timeout, migrations, atomic claims and fenced writes.

    Opening is lazy: the file is created, checked and migrated by the first call, so a store
    that cannot be opened fails that call (lookups fail open) instead of its constructor.
    """

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float = 5.0,
        max_idle_connections: int = 8,
        host_name: str | None = None,
    ) -> None:
        """``path``: usually ``settings.state_path``. ``busy_timeout``: seconds a call waits for another
        process's lock before a lookup fails open or a write raises. ``max_idle_connections``: pool size.
        ``host_name``: this host as owners record it (the ``host_name`` setting; default the host name):
        only owners on it can be checked for life, by pid and start time.
        """
        self.path = path
        self._file = SqliteFile(path, busy_timeout=busy_timeout, max_idle=max_idle_connections)
        self._host = socket.gethostname() if host_name is None else host_name

    @property
    def host(self) -> str:
        return self._host

    def close(self) -> None:
        self._file.close()

    # --- lookups: fail open ----------------------------------------------------------------

    def _lookup(self, doing: str, default: T, query: Callable[[sqlite3.Connection], T]) -> T:
        if not self._file.opened and not self.path.exists():
            logger.debug("%s: the campaign store %s does not exist yet: nothing is recorded", doing, self.path)
            return default
        try:
            return self._file.read(doing, query)
        except StoreUnavailable as exc:
            logger.warning("%s; answering as if nothing were recorded", exc)
            return default

    def find_completed_dispatch(self, campaign_id: str, name: str) -> DispatchRecord | None:
        def query(connection: sqlite3.Connection) -> DispatchRecord | None:
            sql = "SELECT * FROM dispatches WHERE campaign_id = ? AND name = ? AND status = 'success'"
            row = connection.execute(sql, (campaign_id, name)).fetchone()
            return None if row is None else dispatch_from_row(row)

        return self._lookup(f"looking up a success of {campaign_id}/{name}", None, query)

    def get(self, campaign_id: str, name: str) -> DispatchRecord | None:
        return self._lookup(f"reading {campaign_id}/{name}", None, lambda c: read_dispatch(c, campaign_id, name))

    def list(self, campaign_id: str, *, status: DispatchStatus | None = None) -> builtins.list[DispatchRecord]:
        sql, parameters = "SELECT * FROM dispatches WHERE campaign_id = ?", [campaign_id]
        if status is not None:
            sql, parameters = sql + " AND status = ?", [*parameters, status.value]

        def query(connection: sqlite3.Connection) -> builtins.list[DispatchRecord]:
            return [dispatch_from_row(row) for row in connection.execute(sql + " ORDER BY name", parameters)]

        return self._lookup(f"listing the dispatches of {campaign_id}", [], query)

    def get_run(self, run_id: str) -> RunRecord | None:
        return self._lookup(f"reading run {run_id}", None, lambda c: latest_run(c, run_id))

    def list_runs(
        self,
        campaign_id: str | None = None,
        *,
        job_name: str | None = None,
        dispatch_id: str | None = None,
        status: RunStatus | None = None,
        caller_session_id: str | None = None,
    ) -> builtins.list[RunRecord]:
        filters = {
            "campaign_id": campaign_id,
            "job_name": job_name,
            "dispatch_id": dispatch_id,
            "status": status,
            "caller_session_id": caller_session_id,
        }
        given = {column: value for column, value in filters.items() if value is not None}
        where = " AND ".join(f"{column} = ?" for column in given) or "1"
        sql = f"SELECT * FROM runs WHERE {where} ORDER BY started_at, run_id, launch"

        def query(connection: sqlite3.Connection) -> builtins.list[RunRecord]:
            return [run_from_row(row) for row in connection.execute(sql, [str(value) for value in given.values()])]

        return self._lookup("listing runs", [], query)

    def list_steps(self, campaign_id: str, name: str) -> builtins.list[StepExecution]:
        def query(connection: sqlite3.Connection) -> builtins.list[StepExecution]:
            rows = connection.execute(
                "SELECT * FROM step_executions WHERE campaign_id = ? AND job_name = ? ORDER BY sequence",
                (campaign_id, name),
            )
            return [step_from_row(row) for row in rows]

        return self._lookup(f"listing the steps of {campaign_id}/{name}", [], query)

    def owner_alive(self, record: DispatchRecord | RunRecord) -> bool:
        owner = record.owner
        if owner is None:
            return False
        if owner.host != self._host:
            return True  # SQLite is one machine: another host's process cannot be checked from here.
        return process_alive(owner.pid, owner.start_time)

    # --- the claim: never fails open -------------------------------------------------------

    def claim(
        self,
        campaign_id: str,
        name: str,
        *,
        recipe: str,
        inputs: Mapping[str, Any],
        caller_session_id: str | None,
        owner: Owner,
        force: bool = False,
        on_launch: OnLaunchHook | None = None,
    ) -> Claim:
        if on_launch is not None:
            raise InvalidInput(
                "the SQLite store cannot queue a job with its claim: dispatch_mode queue needs a PostgreSQL "
                "store_url (EXPEDITOR_STORE_URL)"
            )
        request = ClaimRequest.of(
            campaign_id,
            name,
            recipe=recipe,
            inputs=inputs,
            caller_session_id=caller_session_id,
            owner=owner,
            force=force,
            now=time.time(),
        )
        recorded = self._recorded_success(request)
        if recorded is not None:
            return recorded
        try:
            return self._file.write(f"claiming {request.job}", lambda c: claim_in(c, request, self.owner_alive))
        except StoreUnavailable as exc:
            raise ClaimRefused(
                f"{exc}; the claim was not recorded, so nothing was launched: retry the dispatch"
            ) from exc

    def _recorded_success(self, request: ClaimRequest) -> Claim | None:
        """A success answered from a read: repeating a finished job needs no write, so a read-only home answers it."""
        if request.force or (not self._file.opened and not self.path.exists()):
            return None
        doing = f"looking up a success of {request.job}"
        try:
            return self._file.read(
                doing, lambda c: short_circuit(read_dispatch(c, request.campaign_id, request.name), request)
            )
        except StoreUnavailable:
            return None  # the claim's own transaction says what is wrong with the store

    # --- fenced transitions ----------------------------------------------------------------

    def _transition(
        self, campaign_id: str, name: str, attempt: int, target: DispatchStatus, changes: Mapping[str, object]
    ) -> DispatchRecord:
        job = f"{campaign_id}/{name}"

        def work(connection: sqlite3.Connection) -> DispatchRecord:
            current = read_dispatch(connection, campaign_id, name)
            updated = fenced_transition(
                current, job=job, attempt=attempt, target=target, changes=changes, now=time.time()
            )
            write_dispatch(connection, updated)
            return updated

        return self._file.write(f"marking {job} {target}", work)

    # --- runs ------------------------------------------------------------------------------

    def record_run_started(self, run: RunRecord) -> RunRecord:
        def work(connection: sqlite3.Connection) -> RunRecord:
            now = time.time()
            previous = latest_run(connection, run.run_id)
            running = previous if previous is not None and previous.status is RunStatus.RUNNING else None
            stored = next_launch(previous, run, running is not None and self.owner_alive(running), now)
            if running is not None:
                reason = f"{running.owner.describe()} is gone"
                close_run(connection, running, RunStatus.INTERRUPTED, None, running.usage, reason, now)
            insert_run(connection, stored)
            return stored

        return self._file.write(f"recording the start of run {run.run_id}", work)

    def record_run_finished(
        self,
        run_id: str,
        *,
        status: RunStatus,
        termination: Termination | None,
        usage: SessionUsage,
        reason: str | None,
        loc_changed: int | None = None,
        evidence: RunEvidence | None = None,
    ) -> RunRecord:
        def work(connection: sqlite3.Connection) -> RunRecord:
            current = check_run_end(latest_run(connection, run_id), run_id, status)
            return close_run(
                connection, current, status, termination, usage, reason, time.time(), loc_changed, evidence
            )

        return self._file.write(f"recording the end of run {run_id}", work)

    def record_run_progress(self, run_id: str, *, usage: SessionUsage, last_moved: float | None) -> bool:
        def work(connection: sqlite3.Connection) -> bool:
            updated = connection.execute(
                "UPDATE runs SET usage = ?, last_moved_at = ?, updated_at = ? WHERE run_id = ? AND status = 'running' "
                "AND launch = (SELECT MAX(launch) FROM runs WHERE run_id = ?)",
                (usage.model_dump_json(), last_moved, time.time(), run_id, run_id),
            )
            return updated.rowcount == 1

        return self._file.write(f"recording the progress of run {run_id}", work)

    def interrupt_runs_of_dead_owners(
        self, usage: Mapping[tuple[str, int], SessionUsage] | None = None
    ) -> builtins.list[RunRecord]:
        known = usage or {}
        if not self._dead_owners_hold("SELECT * FROM runs WHERE status = 'running'", run_from_row):
            return []

        def work(connection: sqlite3.Connection) -> builtins.list[RunRecord]:
            now = time.time()
            running = [run_from_row(row) for row in connection.execute("SELECT * FROM runs WHERE status = 'running'")]
            dead = [run for run in running if not self.owner_alive(run)]
            interrupted = RunStatus.INTERRUPTED
            return [
                close_run(
                    connection,
                    run,
                    interrupted,
                    None,
                    known.get((run.run_id, run.launch), run.usage),
                    f"{run.owner.describe()} is gone",
                    now,
                )
                for run in dead
            ]

        return self._file.write("interrupting the runs of dead owners", work)

    def interrupt_dispatches_of_dead_owners(self) -> builtins.list[DispatchRecord]:
        unfinished = "SELECT * FROM dispatches WHERE status IN ('pending', 'running')"
        if not self._dead_owners_hold(unfinished, dispatch_from_row):
            return []

        def work(connection: sqlite3.Connection) -> builtins.list[DispatchRecord]:
            return interrupt_dispatches_in(connection, self.owner_alive, time.time())

        return self._file.write("interrupting the dispatches of dead owners", work)

    def _dead_owners_hold(self, sql: str, from_row: Callable[[sqlite3.Row], DispatchRecord | RunRecord]) -> bool:
        """Whether a record ``sql`` selects has a dead owner, found by a read: a start-up with nothing to
        interrupt writes nothing (a read-only home opens quietly). When the store cannot be read, the
        write that follows says why."""

        def query(connection: sqlite3.Connection) -> bool:
            return any(not self.owner_alive(from_row(row)) for row in connection.execute(sql))

        try:
            return self._file.read("looking for the records of dead owners", query)
        except StoreUnavailable:
            return True

    # --- ends the store lost -----------------------------------------------------------------

    def restore_dispatch(self, record: DispatchRecord) -> DispatchRecord:
        job = f"{record.campaign_id}/{record.name}"
        return self._file.write(f"restoring the end of {job}", lambda c: restore_dispatch_in(c, record))

    def restore_run(self, run: RunRecord) -> RunRecord:
        return self._file.write(f"restoring the end of run {run.run_id}", lambda c: restore_run_in(c, run))

    # --- pipeline steps --------------------------------------------------------------------

    def record_step(self, step: StepExecution) -> None:
        job = f"{step.campaign_id}/{step.job_name}"
        self._file.write(f"recording step {step.sequence} ({step.step}) of {job}", lambda c: upsert_step(c, step))

    def clear_steps(self, campaign_id: str, name: str, *, from_sequence: int = 1) -> int:
        def work(connection: sqlite3.Connection) -> int:
            sql = "DELETE FROM step_executions WHERE campaign_id = ? AND job_name = ? AND sequence >= ?"
            return connection.execute(sql, (campaign_id, name, from_sequence)).rowcount

        return self._file.write(f"clearing the steps of {campaign_id}/{name}", work)

    # --- budgets ---------------------------------------------------------------------------

    def set_budget(self, budget: Budget) -> Budget | None:
        stamped, parameters = _BUDGETS.stored(budget)

        def work(connection: sqlite3.Connection) -> Budget | None:
            if budget.max_budget_usd is None and budget.max_tokens is None:
                connection.execute(_BUDGETS.delete, _BUDGETS.key(budget))
                return None
            connection.execute(_BUDGETS.upsert, parameters)
            return stamped

        return self._file.write(f"setting the budget of {budget.scope}", work)

    def list_budgets(self, campaign_id: str) -> builtins.list[Budget]:
        def query(connection: sqlite3.Connection) -> builtins.list[Budget]:
            return [budget_from_row(row) for row in connection.execute(_BUDGETS.select, (campaign_id,))]

        return self._lookup(f"reading the budgets of {campaign_id}", [], query)
