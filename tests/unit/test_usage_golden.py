"""Golden: recorded stream-json and transcript files, through the real parsers, give exactly report.md.

The files (tests/data/usage, made by its generate.py with the fake agent) hold a two-block reply,
a crashed session, a session resumed after that crash, a resumed session that crashed after an API
error, and a session served by another provider. report.md was worked out by hand.
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from tests.support.recorded_sessions import DATA, recorded_sessions

from expeditor.executor.models import SessionKind, Termination
from expeditor.reports.aggregate import build_report
from expeditor.reports.render import render_json, render_markdown, render_table
from expeditor.reports.report import UsageReport
from expeditor.state import Owner, RunRecord, RunStatus

T0 = 1_767_225_600.0
OWNER = Owner(pid=1, start_time=T0 - 60, host="builder")
# What the store keeps beside the files: start (s after T0), wall seconds, lines changed, base URL.
RUN_FACTS: dict[str, tuple[float, float, int | None, str | None]] = {
    "plan": (0, 45, 12, None),
    "implement-1": (60, 940, 40, None),  # 15m 40s, crashed
    "implement-2": (1100, 11_060, 371, None),  # resumed: the step totals 3h 20m
    "review-1": (12_200, 0.4, 0, None),
    "review-2": (12_300, 59.6, 0, None),  # resumed, crashed: the step totals 1m 0s
    "summarize": (12_400, 0.3, None, "https://user:secret@api.z.ai/api/anthropic"),
}


def recorded_runs() -> list[RunRecord]:
    runs: list[RunRecord] = []
    launches: dict[str, int] = {}
    for name, session in recorded_sessions().items():
        start, seconds, loc, base_url = RUN_FACTS[name]
        launches[session.session_id] = launches.get(session.session_id, 0) + 1
        crashed = session.exit_code != 0
        runs.append(
            RunRecord(
                run_id=session.session_id,
                launch=launches[session.session_id],
                kind=SessionKind.SKILL,
                status=RunStatus.FAILURE if crashed else RunStatus.SUCCESS,
                campaign_id="release-7",
                job_name="fix-cache",
                termination=Termination.CRASHED if crashed else Termination.COMPLETED,
                usage=session.usage(),
                label=session.step,
                # A gateway is reached with the CLI's default model, which it maps to its own.
                model=None if base_url else session.model,
                api_base_url=base_url,
                loc_changed=loc,
                owner=OWNER,
                started_at=T0 + start,
                finished_at=T0 + start + seconds,
            )
        )
    return runs


def golden_report() -> UsageReport:
    return build_report(recorded_runs(), campaign_id="release-7", job_name="fix-cache", now=T0 + 86_400)


def test_the_recorded_sessions_render_exactly_the_golden_markdown() -> None:
    assert render_markdown(golden_report()) == (DATA / "report.md").read_text()


def test_the_json_report_holds_every_figure_unrounded_and_reads_back_the_same() -> None:
    report = golden_report()
    text = render_json(report)
    assert UsageReport.model_validate_json(text) == report
    implement = next(row for row in report.steps if row.step == "implement")
    assert (implement.usage.cache_read_tokens, implement.sessions, implement.partial) == (39_620_345, 2, True)
    assert [note.mark for note in report.footnotes] == ["*", "†"]


def test_the_terminal_table_shows_the_same_cells_and_footnotes() -> None:
    out = io.StringIO()
    render_table(golden_report(), Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    for expected in ("Token Usage Summary", "Token Efficiency", "Model Usage Breakdown", "implement†", "39.6M"):
        assert expected in text
    assert "summarize*" in text
    assert "* Served by a provider other than Anthropic (API base URL https://api.z.ai; model glm-4.6)" in text
    assert "secret" not in text


@pytest.mark.parametrize("width", [40, 60, 80, 200])
def test_the_terminal_tables_keep_every_column_and_figure_at_any_width(width: int) -> None:
    buffer = io.StringIO()
    render_table(golden_report(), Console(file=buffer, width=width))
    text = buffer.getvalue()
    for header in (
        "Step",
        "Model",
        "count",
        "uncached",
        "peak_ctx",
        "cache_write",
        "time",
        "LoC Changed",
        "output/LoC",
    ):
        assert header in text, (width, header)
    for figure in ("39.6M", "3h 20m", "93.8k", "summarize*"):
        assert figure in text, (width, figure)
