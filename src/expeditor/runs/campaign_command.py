"""``expeditor campaign budget``: set, show or clear what a campaign may spend.

A command line, not a tool or a dispatch argument: the ceiling is the person's to set. A model
that could raise it through a tool call could spend past it, which is what a budget forbids.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from expeditor.config import Settings, load_settings
from expeditor.errors import InvalidInput
from expeditor.ids import validate_identifier
from expeditor.reports import campaign_spending
from expeditor.state import Budget, open_store

__all__ = ["add_campaign_actions", "campaign_budget_command"]


def _usd(text: str) -> float:
    try:
        value = float(text.removeprefix("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount in USD (e.g. 5 or 0.25)") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive amount in USD")
    return value


def _tokens(text: str) -> int:
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of tokens") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of tokens")
    return value


def add_campaign_actions(campaign: argparse.ArgumentParser) -> None:
    """The ``campaign`` command's actions (``budget``), on the parser the command line made for it."""
    actions = campaign.add_subparsers(dest="campaign_command", required=True, metavar="ACTION")
    budget = actions.add_parser(
        "budget",
        help="set, show or clear a campaign's budget",
        description="Set what a campaign may spend (USD, or tokens where cost is unknown), show it beside what its "
        "runs spent, or clear it. A dispatch into a campaign that has spent its budget is refused before anything "
        "launches, and a pipeline of it stops before its next step.",
    )
    budget.add_argument("campaign", help="the campaign id")
    budget.add_argument("usd", nargs="?", type=_usd, help="the budget in USD (omit it to show the budget)")
    budget.add_argument("--tokens", type=_tokens, help="a token budget (input, output, cache reads and writes)")
    budget.add_argument("--clear", action="store_true", help="remove the campaign's budget")
    budget.add_argument("--json", action="store_true", help="print the budget and the spend as JSON")
    budget.set_defaults(handler=_budget)


def _budget(args: argparse.Namespace) -> int:
    settings = load_settings(home=getattr(args, "home", None))
    usd: float | None = args.usd
    tokens: int | None = args.tokens
    if args.clear and (usd is not None or tokens is not None):
        raise InvalidInput("--clear removes the budget: give it without an amount or --tokens")
    if args.clear:
        return campaign_budget_command(settings, args.campaign, (None, None), as_json=args.json, out=sys.stdout)
    setting = usd is not None or tokens is not None
    return campaign_budget_command(
        settings, args.campaign, (usd, tokens) if setting else None, keep=True, as_json=args.json, out=sys.stdout
    )


def campaign_budget_command(
    settings: Settings,
    campaign_id: str,
    limits: tuple[float | None, int | None] | None,
    *,
    keep: bool = False,
    as_json: bool,
    out: TextIO,
) -> int:
    """Set the campaign's budget to ``limits`` ((None, None) clears it; with ``keep``, a limit given as None
    keeps the one set) or, with None, only show it; then print it beside what the campaign spent."""
    validate_identifier(campaign_id, what="campaign")
    store = open_store(settings)
    try:
        budget = next((b for b in store.list_budgets(campaign_id) if b.job_name is None), None)
        if limits is not None:
            usd, tokens = limits
            if keep and budget is not None:
                usd = budget.max_budget_usd if usd is None else usd
                tokens = budget.max_tokens if tokens is None else tokens
            budget = store.set_budget(Budget(campaign_id=campaign_id, max_budget_usd=usd, max_tokens=tokens))
        spent = campaign_spending(store, campaign_id, prices=settings.model_prices)
    finally:
        store.close()
    if as_json:
        shown = {
            "campaign_id": campaign_id,
            "max_budget_usd": budget.max_budget_usd if budget else None,
            "max_tokens": budget.max_tokens if budget else None,
            "spent_usd": spent.usd,
            "spent_tokens": spent.tokens,
            "estimate": spent.estimate,
            "unpriced_runs": spent.unpriced_runs,
        }
        out.write(json.dumps(shown, indent=2) + "\n")
        return 0
    limit = "no budget"
    if budget is not None:
        parts = [
            f"${budget.max_budget_usd:.4g}" if budget.max_budget_usd else "",
            f"{budget.max_tokens:,} tokens" if budget.max_tokens else "",
        ]
        limit = "budget " + " and ".join(part for part in parts if part)
    out.write(f"campaign {campaign_id}: {limit}; spent {spent.describe_usd()} and {spent.tokens:,} tokens\n")
    return 0
