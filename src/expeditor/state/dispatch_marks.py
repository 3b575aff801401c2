"""The named moves of a dispatch record, the same for every store: each is one fenced transition.

A store supplies ``_transition`` (one transaction: read the record, apply the shared fence and
``LEGAL_TRANSITIONS`` from :mod:`expeditor.state.claims`, write it); these say what each move changes.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from expeditor.state.models import DispatchRecord, DispatchStatus, Owner
from expeditor.usage import SessionUsage

__all__ = ["DispatchMarks"]


class DispatchMarks(ABC):
    """``mark_running`` … ``mark_interrupted`` of the ``CampaignStore`` protocol, over a store's ``_transition``."""

    @abstractmethod
    def _transition(
        self, campaign_id: str, name: str, attempt: int, target: DispatchStatus, changes: Mapping[str, object]
    ) -> DispatchRecord: ...

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
        """``owner``: the process that runs the attempt when it is not its claimer (a queue worker takes the
        record over). Legal once per attempt (pending → running), so of two launchers of one attempt the
        second is refused. ``worktree`` and ``branch``: where an isolated job runs."""
        changes: dict[str, object] = {
            "dispatched_session_id": dispatched_session_id,
            "started_at": time.time(),
            "worktree": worktree,
            "branch": branch,
        }
        if owner is not None:
            changes["owner"] = owner
        return self._transition(campaign_id, name, attempt, DispatchStatus.RUNNING, changes)

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
        changes = {
            "result_summary": summary,
            "outputs": dict(outputs or {}),
            "usage": usage,
            "error": None,
            "finished_at": time.time(),
        }
        return self._transition(campaign_id, name, attempt, DispatchStatus.SUCCESS, changes)

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
        changes = {"error": error, "result_summary": summary, "usage": usage, "finished_at": time.time()}
        return self._transition(campaign_id, name, attempt, DispatchStatus.FAILURE, changes)

    def mark_cancelled(
        self, campaign_id: str, name: str, *, attempt: int, reason: str, usage: SessionUsage | None = None
    ) -> DispatchRecord:
        changes = {"error": reason, "usage": usage, "finished_at": time.time()}
        return self._transition(campaign_id, name, attempt, DispatchStatus.CANCELLED, changes)

    def mark_interrupted(self, campaign_id: str, name: str, *, attempt: int, reason: str) -> DispatchRecord:
        changes = {"error": reason, "finished_at": time.time()}
        return self._transition(campaign_id, name, attempt, DispatchStatus.INTERRUPTED, changes)
