"""What a run cost: Claude Code's figure when it reported one, else its tokens priced (an estimate), else unknown."""

from __future__ import annotations

from pathlib import Path

import pytest

from expeditor.config import load_settings
from expeditor.executor.models import SessionKind
from expeditor.reports.spending import Spending, spending
from expeditor.runs import settings_environment
from expeditor.state import Budget, Owner, RunRecord
from expeditor.usage.models import SessionUsage, TokenUsage, UsageSource
from expeditor.usage.prices import price_of, run_cost

MILLION = 1_000_000


def usage(model: str, *, cost: float | None = None, partial: bool = False, **tokens: int) -> SessionUsage:
    figures = TokenUsage(cost_usd=cost, **tokens)
    source = UsageSource.TRANSCRIPT if partial else UsageSource.RESULT_EVENT
    return SessionUsage(total=figures, by_model={model: figures}, source=source, partial=partial)


def test_a_reported_cost_is_the_runs_cost() -> None:
    cost = run_cost(usage("claude-sonnet-4-5", cost=0.02, input_tokens=MILLION))
    assert (cost.usd, cost.estimate) == (0.02, False)


def test_a_run_that_died_first_is_priced_by_the_table_and_marked_an_estimate() -> None:
    cost = run_cost(usage("claude-sonnet-4-5", partial=True, input_tokens=MILLION, output_tokens=MILLION))
    assert cost.estimate
    assert cost.usd == pytest.approx(3 + 15)  # claude-sonnet-4 prices, not claude-sonnet's (longest prefix)


def test_the_users_prices_override_the_table_and_an_unknown_model_has_no_cost() -> None:
    assert price_of("claude-opus-5-5") == (4.0, 20.0, 0.2, 5.0)
    assert price_of("claude-opus-5-5", {"claude-opus-5": (1, 2, 3, 4)}) == (1, 2, 3, 4)
    unknown = run_cost(usage("glm-4.6", partial=True, output_tokens=10))
    assert (unknown.usd, unknown.estimate) == (None, True)
    assert run_cost(SessionUsage()).usd == 0.0


def test_a_budget_is_spent_at_its_figure_and_says_both() -> None:
    budget = Budget(campaign_id="c", max_budget_usd=0.05, max_tokens=1000)
    assert Spending(usd=0.0499, tokens=999).exhausts(budget) is None
    assert Spending(usd=0.05).exhausts(budget) == "campaign c has spent $0.05 of its $0.05 budget"
    assert Spending(tokens=1000).exhausts(budget) == "campaign c has used 1,000 tokens of its 1,000-token budget"


def launch(number: int, usage: SessionUsage, run_id: str = "s") -> RunRecord:
    return RunRecord(
        run_id=run_id, launch=number, kind=SessionKind.SKILL, usage=usage, owner=Owner.current(), started_at=number
    )


def test_a_resumed_launch_costs_what_its_cumulative_report_adds_to_the_one_before() -> None:
    # 2.1.332 reports a resumed session's cost including its earlier launches (0.024, then 0.02424).
    first = launch(1, usage("claude-opus-5-5", cost=0.024, input_tokens=1000, output_tokens=1000))
    resumed = launch(2, usage("claude-opus-5-5", cost=0.02424, input_tokens=10, output_tokens=10))
    other = launch(1, usage("claude-opus-5-5", cost=0.5, output_tokens=1), run_id="other")

    spent = spending([resumed, other, first])

    assert spent.usd == pytest.approx(0.024 + 0.00024 + 0.5)
    assert not spent.estimate
    assert spent.tokens == 2000 + 20 + 1


def test_a_resumed_launch_whose_earlier_one_reported_nothing_is_priced_by_its_tokens() -> None:
    died = launch(1, usage("claude-opus-5-5", partial=True, output_tokens=1000))
    resumed = launch(2, usage("claude-opus-5-5", cost=0.5, output_tokens=1000))

    spent = spending([died, resumed])

    assert spent.usd == pytest.approx(2 * 1000 * 20 / MILLION)
    assert spent.estimate


def test_a_price_table_and_host_lists_reach_a_nested_expeditor_as_it_can_read_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dispatched pipeline runner and an orchestrator's nested server read the parent's settings from
    # the environment; a Python repr there would stop them from starting at all.
    parent = load_settings(
        home=tmp_path,
        allowed_roots=(tmp_path,),
        model_prices={"claude-custom": (1.0, 2.0, 0.1, 1.25)},
        http_allowed_hosts=("a.example.com", "b.example.com:8080"),
    )
    for name, value in settings_environment(parent).items():
        monkeypatch.setenv(name, value)
    child = load_settings()
    assert child.model_prices == {"claude-custom": (1.0, 2.0, 0.1, 1.25)}
    assert child.http_allowed_hosts == ("a.example.com", "b.example.com:8080")
