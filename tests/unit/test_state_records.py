"""The SQLite store's schema, on real database files (runs and steps: tests/contract/test_records.py)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from expeditor.errors import ClaimRefused
from expeditor.state import Owner, SqliteCampaignStore, StepExecution, StepStatus
from expeditor.state.schema import SCHEMA_VERSION

ME = Owner.current()


def test_the_schema_is_migrated_once_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    for _ in range(2):
        opened = SqliteCampaignStore(path)
        opened.record_step(
            StepExecution(campaign_id="camp", job_name="job", sequence=1, step="plan", status=StepStatus.SUCCESS)
        )
        opened.close()
    with sqlite3.connect(path) as connection:
        versions = connection.execute("SELECT version FROM schema_version").fetchall()
        mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    connection.close()
    assert versions == [(version,) for version in range(1, SCHEMA_VERSION + 1)]
    assert mode == "wal"


def test_a_store_from_a_newer_expeditor_is_not_touched(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.sqlite3"
    older = SqliteCampaignStore(path)
    older.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=ME)
    older.close()
    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO schema_version VALUES (99, 0)")
    connection.close()
    store = SqliteCampaignStore(path)
    with caplog.at_level(logging.WARNING):
        assert store.find_completed_dispatch("camp", "job") is None
    assert "schema version 99" in caplog.text
    with pytest.raises(ClaimRefused, match="newer"):
        store.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=ME)
    store.close()


def test_a_lookup_of_a_store_that_does_not_exist_answers_nothing_and_creates_nothing(tmp_path: Path) -> None:
    store = SqliteCampaignStore(tmp_path / "home" / "state.sqlite3")
    assert store.find_completed_dispatch("camp", "job") is None
    assert store.list("camp") == []
    assert store.list_steps("camp", "job") == []
    assert not (tmp_path / "home").exists()
    store.close()
