"""The PostgreSQL claim's ``on_launch`` hook: run inside the claim's transaction, only when it launches.

Part 2 enqueues the job there, so the job is queued exactly when its claim commits: a hook that fails
takes the claim down with it (nothing recorded, nothing launched).
"""

from __future__ import annotations

import pytest

from expeditor.state import Claim, ClaimAction, Owner
from expeditor.state.pg_rows import PgConnection
from expeditor.state.postgres import PostgresCampaignStore
from tests.contract.conftest import StoreMaker

pytestmark = pytest.mark.parametrize("store_kind", ["postgres"])

ME = Owner.current()


def postgres(make_store: StoreMaker) -> PostgresCampaignStore:
    store = make_store()
    assert isinstance(store, PostgresCampaignStore)
    return store


def test_the_hook_sees_the_claim_in_its_transaction_and_runs_only_on_launch(make_store: StoreMaker) -> None:
    store = postgres(make_store)
    seen: list[tuple[ClaimAction, str | None]] = []

    def on_launch(connection: PgConnection, claim: Claim) -> None:
        row = connection.execute(
            "SELECT status FROM dispatches WHERE dispatch_id = %s", (claim.record.dispatch_id,)
        ).fetchone()
        seen.append((claim.action, None if row is None else row["status"]))

    def claim() -> Claim:
        return store.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=ME, on_launch=on_launch)

    assert claim().action is ClaimAction.LAUNCH
    assert claim().action is ClaimAction.ALREADY_RUNNING
    store.mark_failed("camp", "job", attempt=1, error="boom")
    assert claim().attempt == 2
    assert seen == [(ClaimAction.LAUNCH, "pending"), (ClaimAction.LAUNCH, "pending")]


def test_a_failing_hook_takes_the_claim_down_with_it(make_store: StoreMaker) -> None:
    store = postgres(make_store)

    def on_launch(connection: PgConnection, claim: Claim) -> None:
        raise RuntimeError("the queue refused the job")

    with pytest.raises(RuntimeError, match="the queue refused"):
        store.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=ME, on_launch=on_launch)
    assert store.get("camp", "job") is None
    again = store.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=ME)
    assert (again.action, again.attempt) == (ClaimAction.LAUNCH, 1)
