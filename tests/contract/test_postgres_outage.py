"""The PostgreSQL server stopped mid-use (``pg_ctl stop -m immediate``) and started again, under one store object.

While it is down: lookups fail open with a warning naming the server's host and port, a claim is refused
as retryable, a write raises StoreUnavailable, and nothing is half-written. Once it is back, the same
store object works again (its pool reconnects).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg
import pytest

from expeditor.errors import ClaimRefused, StoreUnavailable
from expeditor.state import ClaimAction, DispatchStatus, Owner
from tests.contract.conftest import StoreMaker
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.parametrize("store_kind", ["postgres"])

ME = Owner.current()


@pytest.fixture
def restarted(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """The session's server, started again after the test whatever happens in it."""
    yield postgres_server
    if postgres_server.cluster is not None and not postgres_server.cluster.running():
        postgres_server.start()


def test_a_stopped_server_fails_lookups_open_refuses_claims_and_is_used_again_once_back(
    make_store: StoreMaker, restarted: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(timeout=1.0)
    claimed = store.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=ME)
    before = store.mark_running("camp", "job", attempt=claimed.attempt, dispatched_session_id="s-1")
    # The test cluster commits without waiting for its WAL (synchronous_commit off), which an immediate stop
    # would lose: make what was committed so far last, as a production server's commits do.
    with psycopg.connect(restarted.admin_url, autocommit=True) as admin:
        admin.execute("CHECKPOINT")
    restarted.stop()
    with caplog.at_level(logging.WARNING):
        assert store.get("camp", "job") is None
        assert store.find_completed_dispatch("camp", "job") is None
        assert store.list("camp") == []
    server = f"{restarted.host}:{restarted.port}"
    warnings = [record.getMessage() for record in caplog.records if record.name == "expeditor.state.postgres"]
    assert warnings
    assert all(server in warning and "answering as if nothing were recorded" in warning for warning in warnings)
    assert all(restarted.password not in warning for warning in warnings)
    with pytest.raises(ClaimRefused, match="retry the dispatch") as refused:
        store.claim("camp", "other", recipe="r", inputs={}, caller_session_id=None, owner=ME)
    assert server in str(refused.value)
    assert restarted.password not in str(refused.value)
    with pytest.raises(StoreUnavailable, match=server):
        store.mark_succeeded("camp", "job", attempt=claimed.attempt, summary="done while down")
    restarted.start()
    assert store.get("camp", "job") == before  # nothing of the refused writes landed
    assert store.get("camp", "other") is None
    done = store.mark_succeeded("camp", "job", attempt=claimed.attempt, summary="done")
    assert done.status is DispatchStatus.SUCCESS
    again = store.claim("camp", "other", recipe="r", inputs={}, caller_session_id=None, owner=ME)
    assert again.action is ClaimAction.LAUNCH
