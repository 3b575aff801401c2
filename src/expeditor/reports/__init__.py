"""Token usage reports over the campaign store: per step, per line changed and per model.

Built from the runs the store recorded (``aggregate``), rendered as markdown, JSON or a terminal
table (``render``), and printed by ``expeditor report`` (``commands``).
"""

from expeditor.reports.aggregate import (
    build_report,
    campaign_report,
    campaign_runs,
    campaign_spending,
    figures_so_far,
    job_usage,
)
from expeditor.reports.commands import ReportFormat, report_command
from expeditor.reports.render import render_json, render_markdown, render_table
from expeditor.reports.report import UsageReport
from expeditor.reports.spending import Spending

__all__ = [
    "ReportFormat",
    "Spending",
    "UsageReport",
    "build_report",
    "campaign_report",
    "campaign_runs",
    "campaign_spending",
    "figures_so_far",
    "job_usage",
    "render_json",
    "render_markdown",
    "render_table",
    "report_command",
]
