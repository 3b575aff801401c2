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

__all__ = ["JobLimits", "check_budgets", "check_caller_budgets"]

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
    _refuse_if_spent(settings, store, budgets, recipe=f"recipe {recipe!r}")


def check_caller_budgets(settings: Settings, store: CampaignStore, caller_session_id: str | None) -> None:
    """Raise BudgetSpent when the caller is a dispatched orchestrator whose campaign or job has spent its budget.

    An ``orchestrator: agent`` job runs its steps through ``run_skill``: this is its check before each
    step, as a pipeline's is. The job's budget is the one its dispatch recorded from the recipe.
    """
    caller = store.get_run(caller_session_id) if caller_session_id is not None else None
    if caller is None or caller.campaign_id is None or caller.job_name is None:
        return
    budgets = [b for b in store.list_budgets(caller.campaign_id) if b.job_name in (None, caller.job_name)]
    _refuse_if_spent(settings, store, budgets, recipe="its recipe")


def _refuse_if_spent(settings: Settings, store: CampaignStore, budgets: list[Budget], *, recipe: str) -> None:
    for budget in budgets:
        spent = campaign_spending(store, budget.campaign_id, budget.job_name, prices=settings.model_prices)
        why = spent.exhausts(budget)
        if why is not None:
            how = (
                f"raise it with `expeditor campaign budget {budget.campaign_id} USD`"
                if budget.job_name is None
                else f"raise max_budget_usd (or max_tokens) in {recipe} and run the job again"
            )
            raise BudgetSpent(f"{why}: nothing more of it is launched; {how}")
