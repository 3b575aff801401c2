"""What a run cost: the figure Claude Code reported, else an estimate from its tokens and a price table.

A session that ended with its ``result`` event reported its cost (``total_cost_usd``), and that figure
is the truth. A session that died first left only its transcript's token counts; those are priced by
``MODEL_PRICES`` (USD per million tokens, matched by the longest model id prefix), over which the
``model_prices`` setting lays the user's own, and the cost is marked an estimate. A model no entry
matches (a non-Anthropic provider) has no cost: a token budget (``max_tokens``) stands in for it.

The built-in figures are what Claude Code 2.1.332 charged for each model against the scripted API
(docs/claude-code-cli-notes.md, "Budgets").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from expeditor.usage.models import SessionUsage, TokenUsage, UsageSource

__all__ = ["MODEL_PRICES", "Cost", "Price", "price_of", "run_cost"]

Price = tuple[float, float, float, float]
"""USD per million tokens: uncached input, output, cache reads, cache writes."""

MODEL_PRICES: Mapping[str, Price] = {
    "claude-opus": (4.0, 20.0, 0.2, 5.0),
    "claude-sonnet": (2.0, 10.0, 0.1, 2.5),
    "claude-sonnet-4": (3.0, 15.0, 0.3, 3.75),
    "claude-haiku": (0.5, 0.5, 0.05, 0.625),
    "claude-haiku-4": (1.0, 5.0, 0.1, 1.25),
}


@dataclass(frozen=True)
class Cost:
    """A run's cost in USD (None: unknown), and whether it is an estimate rather than the CLI's figure."""

    usd: float | None
    estimate: bool = False


def price_of(model: str, overrides: Mapping[str, Price] | None = None) -> Price | None:
    """The price of ``model``: the entry with the longest prefix of its id, the user's over the built-in."""
    table = {**MODEL_PRICES, **(overrides or {})}
    matches = [prefix for prefix in table if model.startswith(prefix)]
    return table[max(matches, key=len)] if matches else None


def _priced(usage: TokenUsage, price: Price) -> float:
    p_in, p_out, p_read, p_write = price
    per_million = (
        usage.input_tokens * p_in
        + usage.output_tokens * p_out
        + usage.cache_read_tokens * p_read
        + usage.cache_write_tokens * p_write
    )
    return per_million / 1_000_000


def run_cost(usage: SessionUsage, overrides: Mapping[str, Price] | None = None) -> Cost:
    """What one run (or one recorded step's runs) cost, as exactly as its record allows."""
    if usage.source is UsageSource.NONE or usage.total.all_tokens == 0:
        return Cost(usage.total.cost_usd or 0.0)
    if not usage.partial and usage.total.cost_usd is not None:
        return Cost(usage.total.cost_usd)
    if not usage.by_model:
        return Cost(None, estimate=True)
    total = 0.0
    for model, figures in usage.by_model.items():
        price = price_of(model, overrides)
        if price is None:
            return Cost(None, estimate=True)
        total += _priced(figures, price)
    return Cost(total, estimate=True)
