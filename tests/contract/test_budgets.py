"""Budgets, the same on every store: one per campaign and one per job, replaced when set again, removed when empty."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from expeditor.state import Budget, CampaignStore


def test_a_campaign_and_its_jobs_each_keep_one_budget_that_a_new_one_replaces(store: CampaignStore) -> None:
    before = time.time()
    stored = store.set_budget(Budget(campaign_id="c", max_budget_usd=0.05))
    assert stored is not None
    assert stored.updated_at is not None
    assert stored.updated_at >= before
    store.set_budget(Budget(campaign_id="c", job_name="fix-1", max_tokens=5000))
    store.set_budget(Budget(campaign_id="other", max_budget_usd=9.0))
    store.set_budget(Budget(campaign_id="c", max_budget_usd=0.25, max_tokens=100))

    listed = store.list_budgets("c")

    assert [(b.job_name, b.max_budget_usd, b.max_tokens) for b in listed] == [
        (None, 0.25, 100),
        ("fix-1", None, 5000),
    ]
    assert listed[0].scope == "campaign c"
    assert listed[1].scope == "job c/fix-1"


def test_a_budget_with_neither_limit_removes_the_one_set(store: CampaignStore) -> None:
    store.set_budget(Budget(campaign_id="c", max_budget_usd=1.0))
    store.set_budget(Budget(campaign_id="c", job_name="j", max_budget_usd=1.0))

    assert store.set_budget(Budget(campaign_id="c")) is None

    assert [b.job_name for b in store.list_budgets("c")] == ["j"]
    assert store.list_budgets("nothing-set") == []


@pytest.mark.parametrize("limits", [{"max_budget_usd": 0}, {"max_budget_usd": -1}, {"max_tokens": 0}])
def test_a_budget_must_be_positive(limits: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        Budget(campaign_id="c", **limits)  # pyright: ignore[reportArgumentType]
