"""A usage report as markdown (for pull requests), JSON (for programs) and rich tables (for terminals).

The markdown and terminal forms show the same cells: each table is laid out once, as text,
and only the final dressing differs (escaping and bold in markdown, styles on a terminal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from expeditor.reports.humanize import format_count, format_duration, format_ratio
from expeditor.reports.report import NON_ANTHROPIC_MARK, PARTIAL_MARK, EfficiencyRow, UsageReport

__all__ = ["render_json", "render_markdown", "render_table"]

_SUMMARY_COLUMNS = (
    "Step",
    "Model",
    "count",
    "uncached",
    "output",
    "cache_read",
    "peak_ctx",
    "turns",
    "cache_write",
    "time",
)
_EFFICIENCY_COLUMNS = ("Step", "LoC Changed", "cache_read/LoC", "cache_write/LoC", "output/LoC")
_MODEL_COLUMNS = ("Model", "steps", "uncached", "output", "cache_read", "cache_write", "time")
_BUDGET_COLUMNS = ("Budget of", "budget", "spent", "token budget", "tokens used")
# Characters that would end a table cell, start emphasis or open an HTML tag in GitHub markdown.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_<>|])")


@dataclass(frozen=True)
class _Layout:
    """One table as text: its heading, columns (the first ``text_columns`` left-aligned), rows and notes."""

    title: str
    columns: tuple[str, ...]
    text_columns: int
    rows: list[list[str]]
    total: list[str]
    notes: list[str] = field(default_factory=list[str])


def _marked(name: str, *, non_anthropic: bool, partial: bool = False) -> str:
    return name + (NON_ANTHROPIC_MARK if non_anthropic else "") + (PARTIAL_MARK if partial else "")


def _loc(value: int | None) -> str:
    return "n/a" if value is None else format_count(value)


def _ratio(value: float | None) -> str:
    return "" if value is None else format_ratio(value)


def _efficiency_cells(row: EfficiencyRow, name: str) -> list[str]:
    return [
        name,
        _loc(row.loc_changed),
        _ratio(row.cache_read_per_loc),
        _ratio(row.cache_write_per_loc),
        _ratio(row.output_per_loc),
    ]


def _layouts(report: UsageReport) -> list[_Layout]:
    total = report.total
    summary = _Layout(
        title="Token Usage Summary",
        columns=_SUMMARY_COLUMNS,
        text_columns=2,
        rows=[
            [
                _marked(row.step, non_anthropic=row.non_anthropic, partial=row.partial),
                ", ".join(row.models),
                format_count(row.sessions),
                format_count(row.usage.input_tokens),
                format_count(row.usage.output_tokens),
                format_count(row.usage.cache_read_tokens),
                format_count(row.usage.peak_context),
                format_count(row.usage.turns),
                format_count(row.usage.cache_write_tokens),
                format_duration(row.seconds),
            ]
            for row in report.steps
        ],
        total=[
            _marked("Total", non_anthropic=False, partial=total.partial),
            "",
            format_count(total.sessions),
            format_count(total.usage.input_tokens),
            format_count(total.usage.output_tokens),
            format_count(total.usage.cache_read_tokens),
            format_count(total.usage.peak_context),
            format_count(total.usage.turns),
            format_count(total.usage.cache_write_tokens),
            format_duration(total.seconds),
        ],
        notes=[f"{note.mark} {note.text}" for note in report.footnotes],
    )
    efficiency = _Layout(
        title="Token Efficiency",
        columns=_EFFICIENCY_COLUMNS,
        text_columns=1,
        rows=[_efficiency_cells(row, row.step) for row in report.efficiency],
        total=_efficiency_cells(report.efficiency_total, "Total"),
    )
    models = _Layout(
        title="Model Usage Breakdown",
        columns=_MODEL_COLUMNS,
        text_columns=1,
        rows=[
            [
                _marked(row.model, non_anthropic=row.non_anthropic),
                format_count(row.steps),
                format_count(row.usage.input_tokens),
                format_count(row.usage.output_tokens),
                format_count(row.usage.cache_read_tokens),
                format_count(row.usage.cache_write_tokens),
                format_duration(row.seconds),
            ]
            for row in report.models
        ],
        total=[],
    )
    return [summary, efficiency, models, *_budget_layouts(report), *_branch_layouts(report)]


def _branch_layouts(report: UsageReport) -> list[_Layout]:
    """The Job Branches table, only when a job ran in a worktree of its own: where its commits are."""
    if not report.branches:
        return []
    rows = [[row.job_name, row.branch, row.worktree or ""] for row in report.branches]
    return [_Layout("Job Branches", ("Job", "Branch", "Worktree"), 3, rows, [], [])]


def _budget_layouts(report: UsageReport) -> list[_Layout]:
    """The Budgets table, only when a budget is set: each beside what was spent (``~``: partly estimated)."""
    if not report.budgets:
        return []
    rows = [
        [
            row.scope,
            "" if row.max_budget_usd is None else f"${row.max_budget_usd:,.4g}",
            ("~" if row.estimate else "") + f"${row.spent_usd:,.4f}",
            "" if row.max_tokens is None else format_count(row.max_tokens),
            format_count(row.spent_tokens),
        ]
        for row in report.budgets
    ]
    notes = ["~ part of the spend is estimated from tokens and the price table (a run ended before its cost)."]
    unpriced = sum(row.unpriced_runs for row in report.budgets)
    if unpriced:
        notes.append(f"{unpriced} run(s) used a model no price matches: their tokens count, their cost does not.")
    estimated = any(row.estimate for row in report.budgets)
    return [_Layout("Budgets", _BUDGET_COLUMNS, 1, rows, [], notes if estimated else notes[1:])]


def _escape(text: str) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def render_markdown(report: UsageReport) -> str:
    """The three tables under ``##`` headings; footnotes follow the first table, one paragraph each."""
    blocks: list[str] = []
    for layout in _layouts(report):
        lines = [
            f"## {layout.title}",
            "",
            _markdown_row(list(layout.columns)),
            _markdown_row(["---" if i < layout.text_columns else "---:" for i in range(len(layout.columns))]),
        ]
        lines += [_markdown_row([_escape(cell) for cell in row]) for row in layout.rows]
        if layout.total:
            label, *cells = layout.total
            lines.append(_markdown_row([f"**{_escape(label)}**", *(_escape(cell) for cell in cells)]))
        blocks.append("\n".join(lines))
        blocks.extend(_escape(note) for note in layout.notes)
    return "\n\n".join(blocks) + "\n"


def render_json(report: UsageReport) -> str:
    """The report's every figure, unrounded, as indented JSON."""
    return report.model_dump_json(indent=2) + "\n"


def render_table(report: UsageReport, console: Console) -> None:
    """The three tables as rich tables on ``console``, footnotes after the first."""
    for index, layout in enumerate(_layouts(report)):
        if index:
            console.print()
        # Figures never wrap or shrink. When the terminal is narrower than the table, the table is
        # printed at its natural width and the terminal wraps its lines: every number stays whole.
        table = Table(title=layout.title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        cells = [list(layout.columns), *layout.rows, *([layout.total] if layout.total else [])]
        widths = [max(len(row[position]) for row in cells) for position in range(len(layout.columns))]
        for position, (column, width) in enumerate(zip(layout.columns, widths, strict=True)):
            justify = "left" if position < layout.text_columns else "right"
            table.add_column(column, justify=justify, no_wrap=True, min_width=width)
        for row in layout.rows:
            table.add_row(*(Text(cell) for cell in row))
        if layout.total:
            table.add_section()
            table.add_row(*(Text(cell) for cell in layout.total), style="bold")
        # Each column's widest cell, its padding (1 + 1) and a divider or edge (1).
        natural = sum(widths) + 3 * len(widths) + 1
        previous = console.width
        console.width = max(previous, natural)  # print() caps its own width at the console's
        try:
            console.print(table, crop=False)
        finally:
            console.width = previous
        for note in layout.notes:
            console.print(Text(note))
