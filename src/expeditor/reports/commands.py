"""``expeditor report CAMPAIGN``: a campaign's token usage as markdown, JSON or a terminal table."""

from __future__ import annotations

import json
from typing import Literal, TextIO

from rich.console import Console
from rich.text import Text

from expeditor.config import Settings
from expeditor.reports.aggregate import campaign_report
from expeditor.reports.render import render_json, render_markdown, render_table
from expeditor.state import open_store
from expeditor.state.opening import store_description, store_may_hold_records

__all__ = ["ReportFormat", "report_command"]

ReportFormat = Literal["md", "json", "table"]

EXIT_OK = 0
EXIT_NOTHING_RECORDED = 1
_PIPE_WIDTH = 200


def report_command(
    settings: Settings, campaign_id: str, *, job_name: str | None, fmt: ReportFormat, out: TextIO
) -> int:
    """Write the report of ``campaign_id`` (or of its job ``job_name``) to ``out``; 1 when no run is recorded."""
    scope = f"job {job_name!r} of campaign {campaign_id!r}" if job_name else f"campaign {campaign_id!r}"
    if not store_may_hold_records(settings):  # read, never create, a home where nothing has run
        return _nothing_recorded(
            out, fmt, f"no agent sessions recorded for {scope}: nothing has run in the home {settings.home}"
        )
    store = open_store(settings)
    try:
        report = campaign_report(store, campaign_id, job_name, prices=settings.model_prices)
    finally:
        store.close()
    if not report.steps:
        return _nothing_recorded(out, fmt, f"no agent sessions recorded for {scope} in {store_description(settings)}")
    if fmt == "md":
        out.write(render_markdown(report))
    elif fmt == "json":
        out.write(render_json(report))
    else:
        # A pipe has no width of its own: let the tables take their natural one rather than 80 columns.
        console = Console(file=out) if out.isatty() else Console(file=out, width=_PIPE_WIDTH)
        render_table(report, console)
        console.print(Text(f"From the home {settings.home}", style="dim"))
    return EXIT_OK


def _nothing_recorded(out: TextIO, fmt: ReportFormat, message: str) -> int:
    out.write(json.dumps({"error": message}) + "\n" if fmt == "json" else message + "\n")
    return EXIT_NOTHING_RECORDED
