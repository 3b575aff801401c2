"""Budget rows, the same SQL on every store; only the parameter placeholder differs (``?`` or ``%s``).

A campaign's own budget is stored under the job name ``''`` (a key column cannot be NULL) and read
back as ``job_name=None``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from typing import Any, LiteralString

from expeditor.state.models import Budget

__all__ = ["BudgetSql", "budget_from_row"]

_CAMPAIGN_ROW = ""


class BudgetSql:
    """The statements of ``set_budget`` and ``list_budgets`` with one store's placeholder."""

    def __init__(self, placeholder: LiteralString) -> None:
        p = placeholder
        self.delete: LiteralString = f"DELETE FROM budgets WHERE campaign_id = {p} AND job_name = {p}"
        self.upsert: LiteralString = (
            "INSERT INTO budgets (campaign_id, job_name, max_budget_usd, max_tokens, updated_at) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT (campaign_id, job_name) DO UPDATE SET "
            "max_budget_usd = excluded.max_budget_usd, max_tokens = excluded.max_tokens, "
            "updated_at = excluded.updated_at"
        )
        self.select: LiteralString = f"SELECT * FROM budgets WHERE campaign_id = {p} ORDER BY job_name"

    @staticmethod
    def key(budget: Budget) -> tuple[str, str]:
        return budget.campaign_id, budget.job_name or _CAMPAIGN_ROW

    @staticmethod
    def stored(budget: Budget) -> tuple[Budget, tuple[Any, ...]]:
        """The budget as it will read back (stamped now), and the upsert's parameters."""
        stamped = budget.model_copy(update={"updated_at": time.time()})
        campaign_id, job_name = BudgetSql.key(budget)
        return stamped, (campaign_id, job_name, budget.max_budget_usd, budget.max_tokens, stamped.updated_at)


def budget_from_row(row: Mapping[str, Any] | sqlite3.Row) -> Budget:
    return Budget(
        campaign_id=row["campaign_id"],
        job_name=row["job_name"] or None,
        max_budget_usd=row["max_budget_usd"],
        max_tokens=row["max_tokens"],
        updated_at=row["updated_at"],
    )
