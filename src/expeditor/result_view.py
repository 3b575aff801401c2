"""A run's result as a person reads it on a terminal: outcome, reason, cost, and what was killed."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from expeditor.executor import RunResult

__all__ = ["print_result", "result_table"]


def result_table(result: RunResult) -> Table:
    """One row per fact; stderr only when the run failed."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    verdict = "[green]success[/green]" if result.success else "[red]failed[/red]"
    table.add_row("outcome", f"{verdict} ({result.termination.value}, decided by {result.decided_by.value})")
    table.add_row("reason", result.reason)
    table.add_row("session", result.session_id)
    table.add_row("duration", f"{result.duration_s:.2f}s")
    total = result.usage.total
    table.add_row(
        "tokens",
        f"input {total.input_tokens}, output {total.output_tokens}, cache read {total.cache_read_tokens}, "
        f"cache write {total.cache_write_tokens}, turns {total.turns}"
        + (f", ${total.cost_usd:.4f}" if total.cost_usd is not None else "")
        + (" (partial, from the transcript)" if result.usage.partial else ""),
    )
    if result.killed:
        table.add_row("killed", "; ".join(f"{k.pid} {' '.join(k.cmdline)[:80]}" for k in result.killed))
    if result.result_text:
        table.add_row("result", result.result_text)
    if result.stderr_tail and not result.success:
        table.add_row("stderr", result.stderr_tail[-2000:])
    return table


def print_result(result: RunResult, *, as_json: bool) -> None:
    """The result on stdout: as JSON, or as the table a person reads."""
    if as_json:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        return
    Console().print(result_table(result))
