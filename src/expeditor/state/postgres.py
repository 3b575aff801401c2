"""``PostgresCampaignStore``: one campaign store shared by every host, on PostgreSQL.

The protocol's rules (``state.store``) hold as in SQLite: every method is one transaction
(``pg_connections``), the claim and the attempt fence are the shared rules of ``state.claims`` applied
to rows taken ``FOR UPDATE`` (``pg_writes``; a new job's row is created by ``INSERT … ON CONFLICT DO
NOTHING``, so of any number of concurrent claimers exactly one inserts it). Owner liveness is by
lease (``pg_leases``): the first write registers this process, a background thread renews it.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from psycopg import sql
from psycopg.types.json import Jsonb

from expeditor.errors import ClaimRefused, StoreUnavailable
from expeditor.executor.models import Termination
from expeditor.state.budget_rows import BudgetSql, budget_from_row
from expeditor.state.claims import ClaimRequest, ended_run, restored_dispatch, restored_run, short_circuit
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
from expeditor.state.pg_connections import PgServer
from expeditor.state.pg_leases import Leases
from expeditor.state.pg_rows import (
    PgConnection,
    dispatch_from_row,
    latest_run,
    read_dispatch,
    read_run_launch,
    run_from_row,
    step_from_row,
    upsert_step,
    write_dispatch,
    write_run,
)
from expeditor.state.pg_writes import (
    OnLaunch,
    claim_in,
    finish_run_in,
    interrupt_dispatches_in,
    interrupt_runs_in,
    start_run_in,
    transition_in,
)
from expeditor.times import STORAGE_CONTEXT
from expeditor.usage.models import SessionUsage

__all__ = ["PostgresCampaignStore"]

logger = logging.getLogger(__name__)

_BUDGETS = BudgetSql("%s")

T = TypeVar("T")


class PostgresCampaignStore(DispatchMarks):
    """The shared ``CampaignStore``. Opening is lazy: the first call connects, so a server that is down
    fails that call (lookups fail open) instead of the constructor."""

    def __init__(
        self,
        url: str,
        *,
        schema: str = "expeditor",
        pool_size: int = 8,
        timeout: float = 5.0,
        host_name: str | None = None,
        lease_interval: float = 10.0,
        lease_ttl: float = 30.0,
        owner_kind: str = "process",
    ) -> None:
        """``host_name``: this host as owners record it (``Owner.current()``'s host by default)."""
        self._server = PgServer(url, schema=schema, pool_size=pool_size, timeout=timeout)
        current = Owner.current()
        me = current if host_name is None else current.model_copy(update={"host": host_name})
        self._leases = Leases(self._server.transaction, me=me, kind=owner_kind, interval=lease_interval, ttl=lease_ttl)

    @property
    def host(self) -> str:
        return self._leases.me.host

    @property
    def server(self) -> str:
        """The server as logs name it: ``user@host:port/db``."""
        return self._server.server

    @property
    def last_lease_renewal(self) -> float | None:
        """``time.monotonic()`` of this process's last lease renewal the database took (None before any)."""
        return self._leases.last_renewal

    def close(self) -> None:
        self._leases.close()
        self._server.close()

    def announce_slots(self, slots: int) -> None:
        """Take this process's lease (if not yet) and write a worker's slots on it, for ``status`` to show."""
        me = self._leases.me
        self._write(
            f"recording the slots of {me.describe()}",
            lambda c: c.execute(
                "UPDATE owners SET slots = %s WHERE host = %s AND pid = %s AND start_time = %s",
                (slots, me.host, me.pid, me.start_time),
            ),
        )

    def _write(self, doing: str, work: Callable[[PgConnection], T]) -> T:
        self._leases.ensure_registered()
        return self._server.transaction(doing, work)

    def _lookup(self, doing: str, default: T, query: Callable[[PgConnection], T]) -> T:
        try:
            return self._server.transaction(doing, query, single_statement=True)
        except StoreUnavailable as exc:
            logger.warning("%s; answering as if nothing were recorded", exc)
            return default

    # --- lookups: fail open ----------------------------------------------------------------

    def find_completed_dispatch(self, campaign_id: str, name: str) -> DispatchRecord | None:
        def query(connection: PgConnection) -> DispatchRecord | None:
            found = read_dispatch(connection, campaign_id, name)
            return found if found is not None and found.status is DispatchStatus.SUCCESS else None

        return self._lookup(f"looking up a success of {campaign_id}/{name}", None, query)

    def get(self, campaign_id: str, name: str) -> DispatchRecord | None:
        return self._lookup(f"reading {campaign_id}/{name}", None, lambda c: read_dispatch(c, campaign_id, name))

    def list(self, campaign_id: str, *, status: DispatchStatus | None = None) -> builtins.list[DispatchRecord]:
        def query(connection: PgConnection) -> builtins.list[DispatchRecord]:
            if status is None:
                rows = connection.execute(
                    "SELECT * FROM dispatches WHERE campaign_id = %s ORDER BY name", (campaign_id,)
                )
            else:
                statement = "SELECT * FROM dispatches WHERE campaign_id = %s AND status = %s ORDER BY name"
                rows = connection.execute(statement, (campaign_id, status.value))
            return [dispatch_from_row(row) for row in rows]

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
        given = {column: str(value) for column, value in filters.items() if value is not None}
        where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(column)) for column in given)
        statement = sql.SQL("SELECT * FROM runs WHERE {} ORDER BY started_at, run_id, launch").format(
            where if given else sql.SQL("true")
        )

        def query(connection: PgConnection) -> builtins.list[RunRecord]:
            return [run_from_row(row) for row in connection.execute(statement, list(given.values()))]

        return self._lookup("listing runs", [], query)

    def list_steps(self, campaign_id: str, name: str) -> builtins.list[StepExecution]:
        def query(connection: PgConnection) -> builtins.list[StepExecution]:
            rows = connection.execute(
                "SELECT * FROM step_executions WHERE campaign_id = %s AND job_name = %s ORDER BY sequence",
                (campaign_id, name),
            )
            return [step_from_row(row) for row in rows]

        return self._lookup(f"listing the steps of {campaign_id}/{name}", [], query)

    def owner_alive(self, record: DispatchRecord | RunRecord) -> bool:
        """By lease (and by pid, on this host). When the store cannot be read the owner is taken to be
        alive: nothing is launched twice on a guess."""
        doing = f"asking whether {record.owner.describe() if record.owner else 'an unknown owner'} is alive"
        try:
            alive = self._leases.alive_in
            return self._server.transaction(doing, lambda c: alive(c, [record.owner])(record), single_statement=True)
        except StoreUnavailable as exc:
            logger.warning("%s; taking it to be alive", exc)
            return True

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
        on_launch: OnLaunch | None = None,
    ) -> Claim:
        """The protocol's claim; ``on_launch`` runs in the claim's transaction (a savepoint) when it launches."""
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
        if not force:  # a success is answered from a read: no write, no lock
            try:
                recorded = self._server.transaction(
                    f"looking up a success of {request.job}",
                    lambda c: short_circuit(read_dispatch(c, campaign_id, name), request),
                    single_statement=True,
                )
            except StoreUnavailable:
                recorded = None  # the claim's own transaction says what is wrong with the store
            if recorded is not None:
                return recorded
        try:
            return self._write(f"claiming {request.job}", lambda c: claim_in(c, request, self._leases, on_launch))
        except StoreUnavailable as exc:
            raise ClaimRefused(
                f"{exc}; the claim was not recorded, so nothing was launched: retry the dispatch"
            ) from exc

    # --- fenced transitions ----------------------------------------------------------------

    def _transition(
        self, campaign_id: str, name: str, attempt: int, target: DispatchStatus, changes: Mapping[str, object]
    ) -> DispatchRecord:
        def work(connection: PgConnection) -> DispatchRecord:
            now = time.time()
            return transition_in(
                connection, campaign_id, name, attempt=attempt, target=target, changes=changes, now=now
            )

        return self._write(f"marking {campaign_id}/{name} {target}", work)

    def interrupt_dispatches_of_dead_owners(self) -> builtins.list[DispatchRecord]:
        return self._write(
            "interrupting the dispatches of dead owners",
            lambda c: interrupt_dispatches_in(c, self._leases, time.time()),
        )

    def restore_dispatch(self, record: DispatchRecord) -> DispatchRecord:
        def work(connection: PgConnection) -> DispatchRecord:
            current = read_dispatch(connection, record.campaign_id, record.name, for_update=True)
            stored, write = restored_dispatch(current, record)
            if write:
                write_dispatch(connection, stored)
            return stored

        return self._write(f"restoring the end of {record.campaign_id}/{record.name}", work)

    # --- runs ------------------------------------------------------------------------------

    def record_run_started(self, run: RunRecord) -> RunRecord:
        return self._write(
            f"recording the start of run {run.run_id}", lambda c: start_run_in(c, run, self._leases, time.time())
        )

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
        def end(current: RunRecord) -> RunRecord:
            return ended_run(current, status, termination, usage, reason, time.time(), loc_changed, evidence)

        return self._write(f"recording the end of run {run_id}", lambda c: finish_run_in(c, run_id, status, end))

    def record_run_progress(self, run_id: str, *, usage: SessionUsage, last_moved: float | None) -> bool:
        def work(connection: PgConnection) -> bool:
            updated = connection.execute(
                "UPDATE runs SET usage = %s, last_moved_at = %s, updated_at = %s WHERE run_id = %s "
                "AND status = 'running' AND launch = (SELECT MAX(launch) FROM runs WHERE run_id = %s)",
                (
                    Jsonb(usage.model_dump(mode="json", context=STORAGE_CONTEXT)),
                    last_moved,
                    time.time(),
                    run_id,
                    run_id,
                ),
            )
            return updated.rowcount == 1

        return self._write(f"recording the progress of run {run_id}", work)

    def restore_run(self, run: RunRecord) -> RunRecord:
        def work(connection: PgConnection) -> RunRecord:
            current = read_run_launch(connection, run.run_id, run.launch)
            latest = None if current is None else latest_run(connection, run.run_id)
            stored, write = restored_run(current, latest, run, time.time())
            if write:
                write_run(connection, stored)
            return stored

        return self._write(f"restoring the end of run {run.run_id}", work)

    def interrupt_runs_of_dead_owners(
        self, usage: Mapping[tuple[str, int], SessionUsage] | None = None
    ) -> builtins.list[RunRecord]:
        known = usage or {}
        return self._write(
            "interrupting the runs of dead owners", lambda c: interrupt_runs_in(c, self._leases, known, time.time())
        )

    # --- pipeline steps --------------------------------------------------------------------

    def record_step(self, step: StepExecution) -> None:
        job = f"{step.campaign_id}/{step.job_name}"
        self._write(f"recording step {step.sequence} ({step.step}) of {job}", lambda c: upsert_step(c, step))

    def clear_steps(self, campaign_id: str, name: str, *, from_sequence: int = 1) -> int:
        def work(connection: PgConnection) -> int:
            statement = "DELETE FROM step_executions WHERE campaign_id = %s AND job_name = %s AND sequence >= %s"
            return connection.execute(statement, (campaign_id, name, from_sequence)).rowcount

        return self._write(f"clearing the steps of {campaign_id}/{name}", work)

    # --- budgets ---------------------------------------------------------------------------

    def set_budget(self, budget: Budget) -> Budget | None:
        stamped, parameters = _BUDGETS.stored(budget)

        def work(connection: PgConnection) -> Budget | None:
            if budget.max_budget_usd is None and budget.max_tokens is None:
                connection.execute(_BUDGETS.delete, _BUDGETS.key(budget))
                return None
            connection.execute(_BUDGETS.upsert, parameters)
            return stamped

        return self._write(f"setting the budget of {budget.scope}", work)

    def list_budgets(self, campaign_id: str) -> builtins.list[Budget]:
        def query(connection: PgConnection) -> builtins.list[Budget]:
            return [budget_from_row(row) for row in connection.execute(_BUDGETS.select, (campaign_id,))]

        return self._lookup(f"reading the budgets of {campaign_id}", [], query)
