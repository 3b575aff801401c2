"""Budgets, checked before anything of a campaign or job is launched: a dispatch, a job, each pipeline step.

A campaign's budget is set by a person (``expeditor campaign budget``); a job's is its recipe's
(``max_budget_usd``, ``max_tokens``), recorded with the job each time it starts so reports show it
and a raised recipe budget takes effect on the next run. Spending comes from the runs recorded
(``expeditor.reports.campaign_spending``). A budget that is spent refuses the launch with both
figures (``BudgetSpent``). These are checked between sessions: a session runs to its end (or to its
step's own ``max_budget_usd``, which Claude Code enforces), so a job may end past its budget by what
its last step spent.
"""

from __future__ import annotations

import logging

from expeditor.config import Settings
from expeditor.errors import BudgetSpent, StoreUnavailable
from expeditor.reports import campaign_spending
from expeditor.state import Budget, CampaignStore

__all__ = ["JobLimits", "check_budgets"]

logger = logging.getLogger(__name__)

JobLimits = tuple[float | None, int | None]
"""A recipe's job budget: (max_budget_usd, max_tokens), either None when it sets none."""


def check_budgets(
    settings: Settings, store: CampaignStore, campaign_id: str, job_name: str, *, recipe: str, limits: JobLimits
) -> None:
    """Raise BudgetSpent when the campaign's budget or the job's is spent (synchronous: the store is)."""
    max_usd, max_tokens = limits
    job_budget = Budget(campaign_id=campaign_id, job_name=job_name, max_budget_usd=max_usd, max_tokens=max_tokens)
    try:
        store.set_budget(job_budget)
    except StoreUnavailable as exc:
        # Only what reports show depends on it; the job's limits are enforced from the recipe all the same.
        logger.warning("could not record the budget of job %s/%s: %s", campaign_id, job_name, exc)
    budgets = [budget for budget in store.list_budgets(campaign_id) if budget.job_name is None]
    if max_usd is not None or max_tokens is not None:
        budgets.append(job_budget)
    for budget in budgets:
        spent = campaign_spending(store, campaign_id, budget.job_name, prices=settings.model_prices)
        why = spent.exhausts(budget)
        if why is not None:
            how = (
                f"raise it with `expeditor campaign budget {campaign_id} USD`"
                if budget.job_name is None
                else f"raise max_budget_usd (or max_tokens) in recipe {recipe!r} and run the job again"
            )
            raise BudgetSpent(f"{why}: nothing more of it is launched; {how}")
