"""A store that cannot be reached, on every kind: lookups fail open with a warning, a claim is refused as
retryable, a write raises StoreUnavailable, and nothing is recorded.

SQLite: its path lies under a regular file, so the file can never be created. PostgreSQL: nothing listens
on the URL's port. (A server stopped mid-use: test_postgres_outage.py; SQLite's own failures, corrupt and
locked files: tests/integration/test_state_failures.py.)
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from expeditor.errors import ClaimRefused, StoreUnavailable
from expeditor.state import CampaignStore, Owner, SqliteCampaignStore, StepExecution, StepStatus
from expeditor.state.postgres import PostgresCampaignStore

ME = Owner.current()


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens once the probe is closed


@pytest.fixture
def unreachable(store_kind: str, tmp_path: Path) -> tuple[CampaignStore, str]:
    """A store of the kind that cannot be reached, and what its messages must name."""
    if store_kind == "sqlite":
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("a file where the home should be")
        path = blocker / "state.sqlite3"
        return SqliteCampaignStore(path, busy_timeout=0.5), str(blocker)
    port = _closed_port()
    url = f"postgresql://someone:s3cret-password@127.0.0.1:{port}/nowhere"
    return PostgresCampaignStore(url, timeout=0.5), f"127.0.0.1:{port}"


def test_an_unreachable_store_fails_lookups_open_and_refuses_writes(
    unreachable: tuple[CampaignStore, str], caplog: pytest.LogCaptureFixture
) -> None:
    store, named = unreachable
    try:
        with caplog.at_level(logging.WARNING):
            assert store.get("camp", "job") is None
            assert store.list("camp") == []
            assert store.list_runs("camp") == []
            assert store.list_steps("camp", "job") == []
            assert store.get_run("s-1") is None
        with pytest.raises(ClaimRefused, match="retry the dispatch") as refused:
            store.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=ME)
        with pytest.raises(StoreUnavailable) as unavailable:
            store.record_step(
                StepExecution(campaign_id="camp", job_name="job", sequence=1, step="plan", status=StepStatus.SUCCESS)
            )
    finally:
        store.close()
    messages = [str(refused.value), str(unavailable.value)]
    messages += [record.getMessage() for record in caplog.records if record.name.startswith("expeditor.state")]
    assert all(named in message for message in messages), messages
    assert all("s3cret-password" not in message for message in messages)
    # The store's own warnings only: the driver's pool adds none for each failed connection attempt.
    warned = [record.name for record in caplog.records if record.levelno >= logging.WARNING]
    assert all(name.startswith("expeditor.state") for name in warned), warned
