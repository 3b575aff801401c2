"""``expeditor report``: a campaign's usage from the SQLite store, as markdown, JSON or a terminal table."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from expeditor.config import Settings, load_settings
from expeditor.executor.models import SessionKind, Termination
from expeditor.reports.aggregate import campaign_report
from expeditor.reports.commands import report_command
from expeditor.reports.render import render_markdown
from expeditor.reports.report import UsageReport
from expeditor.state import Owner, RunRecord, RunStatus, SqliteCampaignStore
from expeditor.usage.models import SessionUsage, TokenUsage, UsageSource


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(home=tmp_path / "home")


def record(store: SqliteCampaignStore, run_id: str, label: str, output: int, **fields: object) -> None:
    figures = TokenUsage(output_tokens=output, cache_read_tokens=10 * output, turns=1)
    store.record_run_started(
        RunRecord.model_validate(
            {
                "run_id": run_id,
                "kind": SessionKind.SKILL,
                "label": label,
                "owner": Owner.current(),
                "started_at": time.time(),
                **fields,
            }
        )
    )
    store.record_run_finished(
        run_id,
        status=RunStatus.SUCCESS,
        termination=Termination.COMPLETED,
        usage=SessionUsage(total=figures, by_model={"claude-sonnet-4-5": figures}, source=UsageSource.RESULT_EVENT),
        reason="completed",
        loc_changed=3,
    )


@pytest.fixture
def recorded(settings: Settings) -> Settings:
    store = SqliteCampaignStore(settings.state_path)
    try:
        record(store, "orch", "orchestrator", 100, kind=SessionKind.ORCHESTRATOR, campaign_id="c", job_name="fix")
        record(store, "skill", "/make-plan", 2000, caller_session_id="orch")
        record(store, "docs", "orchestrator", 5, kind=SessionKind.ORCHESTRATOR, campaign_id="c", job_name="docs")
        record(store, "unrelated", "/make-plan", 7)
    finally:
        store.close()
    return settings


def test_markdown_is_the_campaign_report_with_the_skills_its_orchestrators_ran(recorded: Settings) -> None:
    out = io.StringIO()
    assert report_command(recorded, "c", job_name=None, fmt="md", out=out) == 0
    store = SqliteCampaignStore(recorded.state_path)
    try:
        expected = render_markdown(campaign_report(store, "c"))
    finally:
        store.close()
    assert out.getvalue() == expected
    assert "| orchestrator | claude-sonnet-4-5 | 2 | 0 | 105 |" in expected
    assert "| /make-plan | claude-sonnet-4-5 | 1 | 0 | 2.0k |" in expected


def test_json_holds_one_job_when_asked(recorded: Settings) -> None:
    out = io.StringIO()
    assert report_command(recorded, "c", job_name="fix", fmt="json", out=out) == 0
    report = UsageReport.model_validate(json.loads(out.getvalue()))
    assert (report.campaign_id, report.job_name) == ("c", "fix")
    assert [(row.step, row.sessions) for row in report.steps] == [("orchestrator", 1), ("/make-plan", 1)]
    assert report.total.usage.output_tokens == 2100


def test_the_table_format_prints_the_three_tables(recorded: Settings) -> None:
    out = io.StringIO()
    assert report_command(recorded, "c", job_name=None, fmt="table", out=out) == 0
    for title in ("Token Usage Summary", "Token Efficiency", "Model Usage Breakdown"):
        assert title in out.getvalue()


def test_a_campaign_with_no_runs_says_so_in_one_line_and_fails(recorded: Settings) -> None:
    out = io.StringIO()
    assert report_command(recorded, "nope", job_name=None, fmt="md", out=out) == 1
    assert out.getvalue() == f"no agent sessions recorded for campaign 'nope' in {recorded.state_path}\n"
    job = io.StringIO()
    assert report_command(recorded, "c", job_name="other", fmt="md", out=job) == 1
    assert job.getvalue().startswith("no agent sessions recorded for job 'other' of campaign 'c'")


def test_reporting_from_a_home_with_no_store_creates_none(settings: Settings) -> None:
    out = io.StringIO()
    assert report_command(settings, "c", job_name=None, fmt="md", out=out) == 1
    assert not settings.state_path.exists()
