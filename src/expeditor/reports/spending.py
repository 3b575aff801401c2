"""What a campaign or a job has spent, from the runs it recorded, and how that stands against a budget.

Each launch of a session counts once: its cost is what Claude Code reported (for a resumed session,
what its report adds to the launch before), else an estimate from its tokens (``expeditor.usage.prices``).
Tokens are every token a run used (input, output, cache reads and writes): what a ``max_tokens``
budget counts where cost is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from expeditor.reports.report import BudgetRow
from expeditor.state import Budget, RunRecord
from expeditor.usage.models import UsageSource
from expeditor.usage.prices import Cost, Price, run_cost

__all__ = ["Spending", "budget_row", "spending"]


@dataclass(frozen=True)
class Spending:
    """Spent so far: USD (reported, plus estimates), tokens, and how many runs could not be priced."""

    usd: float = 0.0
    tokens: int = 0
    estimate: bool = False
    unpriced_runs: int = 0

    def describe_usd(self) -> str:
        return f"${self.usd:.4g}" + (" (estimated in part)" if self.estimate else "")

    def exhausts(self, budget: Budget) -> str | None:
        """Why ``budget`` is spent (both figures), or None while it is not."""
        if budget.max_budget_usd is not None and self.usd >= budget.max_budget_usd:
            return f"{budget.scope} has spent {self.describe_usd()} of its ${budget.max_budget_usd:.4g} budget"
        if budget.max_tokens is not None and self.tokens >= budget.max_tokens:
            return f"{budget.scope} has used {self.tokens:,} tokens of its {budget.max_tokens:,}-token budget"
        return None


def _reported(run: RunRecord) -> float | None:
    """The cost Claude Code reported for the session up to the end of this launch (None: none reported)."""
    usage = run.usage
    return usage.total.cost_usd if usage.source is UsageSource.RESULT_EVENT and not usage.partial else None


def _launch_costs(runs: Iterable[RunRecord], prices: Mapping[str, Price] | None) -> Iterator[tuple[RunRecord, Cost]]:
    """Each launch's own cost. A resumed session's reported cost includes its earlier launches' (2.1.332 adds
    them up; its token figures it does not), so a later launch costs what its report adds to the one before;
    without that earlier report, its own tokens are priced instead (an estimate)."""
    reported: dict[str, float | None] = {}
    for run in sorted(runs, key=lambda run: (run.run_id, run.launch)):
        cost = run_cost(run.usage, prices)
        now = _reported(run)
        if run.launch > 1 and now is not None:
            before = reported.get(run.run_id)
            if before is not None:
                cost = Cost(max(now - before, 0.0))
            else:
                cost = run_cost(run.usage.model_copy(update={"partial": True}), prices)
        reported[run.run_id] = now
        yield run, cost


def spending(runs: Iterable[RunRecord], prices: Mapping[str, Price] | None = None) -> Spending:
    """What ``runs`` spent together."""
    usd, tokens, estimate, unpriced = 0.0, 0, False, 0
    for run, cost in _launch_costs(runs, prices):
        tokens += run.usage.total.all_tokens
        if cost.usd is None:
            unpriced += 1
        else:
            usd += cost.usd
            estimate = estimate or cost.estimate
    return Spending(usd=usd, tokens=tokens, estimate=estimate, unpriced_runs=unpriced)


def budget_row(budget: Budget, spent: Spending) -> BudgetRow:
    return BudgetRow(
        scope=budget.scope,
        max_budget_usd=budget.max_budget_usd,
        spent_usd=spent.usd,
        estimate=spent.estimate,
        unpriced_runs=spent.unpriced_runs,
        max_tokens=budget.max_tokens,
        spent_tokens=spent.tokens,
    )
