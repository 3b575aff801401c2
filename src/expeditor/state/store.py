"""The ``CampaignStore`` protocol: what every campaign store does, embedded or shared.

Written so a PostgreSQL store fits beside the SQLite one:

- every method is one transaction; nothing spans two calls;
- ``claim`` is the only way to start an attempt, and exactly one of any number of concurrent
  claimers of a ``(campaign_id, name)`` is told to launch;
- every write to a dispatch carries the attempt number its claim returned, and a write whose
  attempt is no longer the record's is refused (``StaleAttempt``), so a claimer that was
  presumed dead cannot overwrite the work of the one that replaced it;
- a claim of a job that succeeded is answered from a read, without a write transaction, so a
  store this process can only read (a read-only home) still short-circuits finished work;
- a claimed record always reaches an end: when the store lost it (it was recreated) or cannot take
  the end as a transition, its owner writes the whole ended record again (``restore_dispatch``,
  ``restore_run``), and at start-up the records of dead owners are interrupted;
- nothing host-local leaks through: whether a record's owner is alive is asked of the store
  (``owner_alive``), which the SQLite store answers from the process table and a shared
  store would answer with leases.

Failure rules: lookups (``find_completed_dispatch``, ``get``, ``list``, ``get_run``,
``list_runs``, ``list_steps``) fail open: when the store cannot be read they log a warning and
answer as if nothing were recorded, because reading state must never block work. Writes raise
``StoreUnavailable``; a claim that cannot be written raises ``ClaimRefused``, because a launch
nobody recorded would be repeated. Illegal moves raise ``IllegalTransition``.

Calls are synchronous and safe to make from several threads at once; async code calls them
through ``anyio.to_thread.run_sync``.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from expeditor.executor.models import Termination
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
from expeditor.usage.models import SessionUsage

__all__ = ["CampaignStore", "OnLaunchHook"]


OnLaunchHook = Callable[[Any, Claim], None]
"""Run in a launching claim's transaction, given the store's connection (a PostgreSQL one)."""


class CampaignStore(Protocol):
    """Dispatch records, runs and pipeline step executions of every campaign."""

    # --- dispatches --------------------------------------------------------------------

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
        """Decide, atomically, whether this caller launches the job.

        ``on_launch(connection, claim)`` runs inside the claim's transaction when it launches, so what it
        writes commits with the claim or not at all (the queue's job); only a shared store takes one.

        No record: create it ``pending`` (attempt 1) and answer ``launch``. ``success``: answer
        ``short_circuit`` unless ``force``. ``running`` or ``pending`` under a live owner:
        ``already_running`` (``force`` does not launch twice). ``running`` under a dead owner:
        mark it ``interrupted``, then relaunch. Relaunching sets the record ``pending`` under
        ``owner`` with attempts + 1 and the new recipe and inputs. Raises ``ClaimRefused``
        when the claim cannot be written. The short-circuit needs no write: a store that can
        only be read answers it.
        """
        ...

    def find_completed_dispatch(self, campaign_id: str, name: str) -> DispatchRecord | None:
        """The job's record if it succeeded, else None (also when the store cannot be read)."""
        ...

    def get(self, campaign_id: str, name: str) -> DispatchRecord | None:
        """The job's record in any status, or None."""
        ...

    def list(self, campaign_id: str, *, status: DispatchStatus | None = None) -> builtins.list[DispatchRecord]:
        """The campaign's records, by name, optionally only those in ``status``."""
        ...

    @property
    def host(self) -> str:
        """This host's name as the store records owners (``Owner.host``, the ``host_name`` setting).

        A record owned under another host name is that host's: its files (a run's transcript) are not
        here, so readers use what the store holds of it (``record_run_progress``).
        """
        ...

    def owner_alive(self, record: DispatchRecord | RunRecord) -> bool:
        """Whether the process that owns ``record`` may still be working on it."""
        ...

    def mark_running(
        self,
        campaign_id: str,
        name: str,
        *,
        attempt: int,
        dispatched_session_id: str,
        owner: Owner | None = None,
        worktree: str | None = None,
        branch: str | None = None,
    ) -> DispatchRecord:
        """pending -> running: the attempt's session was launched (by ``owner``, when not its claimer; in
        ``worktree``, on ``branch``, when the job is isolated)."""
        ...

    def mark_succeeded(
        self,
        campaign_id: str,
        name: str,
        *,
        attempt: int,
        summary: str | None,
        outputs: Mapping[str, Any] | None = None,
        usage: SessionUsage | None = None,
    ) -> DispatchRecord:
        """running -> success, with the result."""
        ...

    def mark_failed(
        self,
        campaign_id: str,
        name: str,
        *,
        attempt: int,
        error: str,
        summary: str | None = None,
        usage: SessionUsage | None = None,
    ) -> DispatchRecord:
        """pending or running -> failure, saying why."""
        ...

    def mark_cancelled(
        self, campaign_id: str, name: str, *, attempt: int, reason: str, usage: SessionUsage | None = None
    ) -> DispatchRecord:
        """pending or running -> cancelled."""
        ...

    def mark_interrupted(self, campaign_id: str, name: str, *, attempt: int, reason: str) -> DispatchRecord:
        """pending or running -> interrupted: its owner stopped before the run ended."""
        ...

    def interrupt_dispatches_of_dead_owners(self) -> builtins.list[DispatchRecord]:
        """Mark every pending or running record whose owner is gone ``interrupted``, with the runs it
        left running; returns them (start-up, so no record outlives its owner as "running")."""
        ...

    def restore_dispatch(self, record: DispatchRecord) -> DispatchRecord:
        """Write an attempt's end that could not be written as a transition; returns the record as stored.

        ``record`` is the whole record as the end leaves it. With no record of the job (the store was
        recreated) it is inserted; the same attempt still pending or running takes its end; an end
        already recorded stands. A record at another attempt raises ``StaleAttempt``.
        """
        ...

    # --- runs --------------------------------------------------------------------------

    def record_run_started(self, run: RunRecord) -> RunRecord:
        """Record a launch; returns it with its ``launch`` number (1, or + 1 for a resume).

        Refused with ``IllegalTransition`` while an earlier launch of the same session is
        running under a live owner; one under a dead owner is marked interrupted first.
        """
        ...

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
        """Close the latest launch of ``run_id``, which must be running; ``loc_changed`` as measured by git."""
        ...

    def record_run_progress(self, run_id: str, *, usage: SessionUsage, last_moved: float | None) -> bool:
        """Store what the running latest launch of ``run_id`` has spent so far; True if it was stored.

        Called by the run's supervisor while the run goes on (at most every ``run_progress_interval``)
        so that other hosts, which cannot read its transcript, report it from the store. ``usage`` is
        the figures so far (from the transcript: ``partial``); ``last_moved`` is the epoch time the
        session last showed activity (None: not yet), kept as the launch's ``last_moved_at``;
        ``updated_at`` becomes now. Only a running launch takes progress: an ended one (its end
        stands, whatever arrives late) or none recorded is left as it is and False returned; no
        record is ever created. Raises ``StoreUnavailable`` when it cannot be written; a caller
        warns and goes on, since progress is never worth stopping a run for.
        """
        ...

    def restore_run(self, run: RunRecord) -> RunRecord:
        """Write an ended launch that could not be closed as a transition; returns it as stored.

        Missing (the store was recreated) it is inserted; still running it is closed with ``run``'s
        end; an end already recorded stands; a launch number another launch holds makes it the next.
        """
        ...

    def get_run(self, run_id: str) -> RunRecord | None:
        """The latest launch of ``run_id``, or None."""
        ...

    def list_runs(
        self,
        campaign_id: str | None = None,
        *,
        job_name: str | None = None,
        dispatch_id: str | None = None,
        status: RunStatus | None = None,
        caller_session_id: str | None = None,
    ) -> builtins.list[RunRecord]:
        """Runs matching every filter given, oldest first."""
        ...

    def interrupt_runs_of_dead_owners(
        self, usage: Mapping[tuple[str, int], SessionUsage] | None = None
    ) -> builtins.list[RunRecord]:
        """Mark every running run whose owner is gone ``interrupted``; returns them (server start-up).

        ``usage``, by (run id, launch), is what the caller read from those runs' transcripts: the
        store reads no host-local file.
        """
        ...

    # --- pipeline steps ----------------------------------------------------------------

    def record_step(self, step: StepExecution) -> None:
        """Insert or replace the execution ``(campaign_id, job_name, sequence)``."""
        ...

    def list_steps(self, campaign_id: str, name: str) -> builtins.list[StepExecution]:
        """The job's step executions in order of sequence."""
        ...

    def clear_steps(self, campaign_id: str, name: str, *, from_sequence: int = 1) -> int:
        """Forget the job's step executions from ``from_sequence`` on (all: a forced rerun); returns how many."""
        ...

    # --- budgets -----------------------------------------------------------------------

    def set_budget(self, budget: Budget) -> Budget | None:
        """Set the budget of ``budget.campaign_id`` (and ``job_name``), replacing the one set before; returns it
        as stored. A budget with neither limit removes it (returns None)."""
        ...

    def list_budgets(self, campaign_id: str) -> builtins.list[Budget]:
        """The campaign's budgets: its own first, then its jobs' by name."""
        ...

    def close(self) -> None:
        """Release connections; the store may not be used afterwards."""
        ...
