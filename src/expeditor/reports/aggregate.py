"""From recorded runs to a usage report: per session, per step, per model and for a whole campaign.

Each run's figures were taken once, when it ended, from the right place (its ``result`` event,
or its transcript deduplicated by message id, from where a resumed session started); this
module only adds them up. Two things overlap when runs nest (an orchestrator waits while the
skills it called run in its working directory; a dispatched pipeline runner waits on its
steps) and are therefore counted once in the totals: wall time (the time anything ran) and
lines changed (each tree of runs once). A pipeline runner is no agent and spends no tokens: it
has no row, though it counts in those totals. A recipe's plain ``run`` command counts nowhere.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from expeditor.executor.models import SessionKind
from expeditor.reports.provider import is_anthropic_base_url, is_anthropic_model, public_base_url
from expeditor.reports.report import (
    NON_ANTHROPIC_MARK,
    PARTIAL_MARK,
    EfficiencyRow,
    Footnote,
    JobBranch,
    ModelRow,
    StepRow,
    TotalRow,
    UsageReport,
)
from expeditor.reports.spending import Spending, budget_row, spending
from expeditor.state import CampaignStore, RunRecord, RunStatus
from expeditor.usage.models import SessionUsage, TokenUsage, UsageSource
from expeditor.usage.prices import Price
from expeditor.usage.transcript import usage_from_transcript

__all__ = ["build_report", "campaign_report", "campaign_runs", "campaign_spending", "figures_so_far", "job_usage"]

# The model of a session that asked for none and recorded no figures: the CLI's default.
_DEFAULT_MODEL = "default"


class _Gap(Enum):
    """Why a session's figures are incomplete."""

    ENDED_EARLY = (
        "a session ended (or was still running) without its result event, so its figures come from its "
        "transcript (each message once)."
    )
    NOT_RECORDED = "a session was still running, or its server had stopped, at the time of this report: no figures yet."


def _figures(run: RunRecord) -> dict[str, TokenUsage]:
    """The run's tokens per model, leaving out models listed without a single token."""
    by_model = {model: usage for model, usage in run.usage.by_model.items() if usage.all_tokens}
    if not by_model and run.usage.total.all_tokens:
        return {run.model or _DEFAULT_MODEL: run.usage.total}
    return by_model


def _gap(run: RunRecord) -> _Gap | None:
    # The executor marks figures partial exactly when they had to come from the transcript. A run
    # with no figures that ended is complete: a launch that failed, or a plain command (a
    # pipeline's run: step), spent no tokens.
    if run.usage.partial:
        return _Gap.ENDED_EARLY
    if run.status in (RunStatus.RUNNING, RunStatus.INTERRUPTED) and run.usage.source is UsageSource.NONE:
        return _Gap.NOT_RECORDED
    return None


@dataclass(frozen=True)
class _Run:
    """A run with what the report needs to know about it."""

    run: RunRecord
    step: str
    figures: dict[str, TokenUsage]
    start: float
    end: float
    gap: _Gap | None
    foreign_base_url: str | None
    foreign_models: tuple[str, ...]

    @classmethod
    def of(cls, run: RunRecord, now: float) -> _Run:
        figures = _figures(run)
        asked = [run.model] if run.model else []
        base_url = run.api_base_url
        return cls(
            run=run,
            step=run.label or run.kind.value,
            figures=figures,
            start=run.started_at,
            end=max(run.started_at, run.finished_at if run.finished_at is not None else now),
            gap=_gap(run),
            foreign_base_url=base_url if base_url and not is_anthropic_base_url(base_url) else None,
            foreign_models=tuple(m for m in _unique([*figures, *asked]) if not is_anthropic_model(m)),
        )

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def main_model(self, *, fallback: str) -> str:
        """The model that processed most of its tokens; ``fallback`` when it has no figures."""
        return max(self.figures, key=lambda model: self.figures[model].all_tokens) if self.figures else fallback

    @property
    def non_anthropic(self) -> bool:
        return self.foreign_base_url is not None or bool(self.foreign_models)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _sum(usages: Iterable[TokenUsage]) -> TokenUsage:
    total = TokenUsage()
    for usage in usages:
        total = total + usage
    return total


def _ratio(tokens: int, loc: int | None) -> float | None:
    return tokens / loc if loc else None


def _efficiency(step: str, usage: TokenUsage, loc: int | None) -> EfficiencyRow:
    return EfficiencyRow(
        step=step,
        loc_changed=loc,
        cache_read_per_loc=_ratio(usage.cache_read_tokens, loc),
        cache_write_per_loc=_ratio(usage.cache_write_tokens, loc),
        output_per_loc=_ratio(usage.output_tokens, loc),
    )


def _measured_sum(values: Iterable[int | None]) -> int | None:
    measured = [value for value in values if value is not None]
    return sum(measured) if measured else None


def _elapsed(runs: Sequence[_Run]) -> float:
    """Seconds during which at least one run was going."""
    elapsed = 0.0
    covered_until = float("-inf")
    for run in sorted(runs, key=lambda r: r.start):
        start = max(run.start, covered_until)
        if run.end > start:
            elapsed += run.end - start
            covered_until = run.end
    return elapsed


def _tree_loc(runs: Sequence[_Run]) -> int | None:
    """Lines changed, each tree of runs once.

    A run's measure spans its whole life, so it already holds what the runs it called changed
    in its working directory: a tree is measured at its root or, where a run was not measured
    (a cancelled one), by what its callees measured.
    """
    own: dict[str, int | None] = {}
    callees: dict[str, list[str]] = {}
    for run in (r.run for r in runs):
        own[run.run_id] = _measured_sum([own.get(run.run_id), run.loc_changed])
        if run.caller_session_id is not None and run.run_id not in callees.setdefault(run.caller_session_id, []):
            callees[run.caller_session_id].append(run.run_id)

    def covered(run_id: str, visited: frozenset[str]) -> int | None:
        if own.get(run_id) is not None:
            return own[run_id]
        return _measured_sum(covered(c, visited | {c}) for c in callees.get(run_id, []) if c not in visited)

    roots = [r.run.run_id for r in runs if r.run.caller_session_id not in own]
    return _measured_sum(covered(run_id, frozenset({run_id})) for run_id in _unique(roots))


def _footnotes(sessions: Sequence[_Run]) -> list[Footnote]:
    notes: list[Footnote] = []
    base_urls = _unique(public_base_url(s.foreign_base_url) for s in sessions if s.foreign_base_url)
    models = _unique(model for s in sessions for model in s.foreign_models)
    if base_urls or models:
        evidence = [f"API base URL {url}" for url in base_urls] + [f"model {model}" for model in models]
        text = (
            f"Served by a provider other than Anthropic ({'; '.join(evidence)}): tokens as that provider counts them."
        )
        notes.append(Footnote(mark=NON_ANTHROPIC_MARK, text=text))
    gaps = {s.gap for s in sessions}
    notes.extend(Footnote(mark=PARTIAL_MARK, text=f"Partial: {gap.value}") for gap in _Gap if gap in gaps)
    return notes


def build_report(
    runs: Sequence[RunRecord],
    *,
    campaign_id: str | None = None,
    job_name: str | None = None,
    now: float | None = None,
) -> UsageReport:
    """The usage report of ``runs``: one row per step (a run's label) in order of its first start.

    ``now`` ends the wall time of runs still going (default: the current time).
    """
    moment = time.time() if now is None else now
    ordered = sorted(runs, key=lambda run: (run.started_at, run.run_id, run.launch))
    # Plain commands spend no tokens and have no row; leaving them out of the totals too keeps
    # every Total the sum of the rows above it.
    every_run = [_Run.of(run, moment) for run in ordered if run.kind is not SessionKind.COMMAND]
    # A pipeline runner and a plain command are no agents and spend no tokens: their steps (or
    # nothing) have rows; they still count in the total time and lines changed.
    sessions = [r for r in every_run if r.run.kind is not SessionKind.PIPELINE]
    by_step: dict[str, list[_Run]] = {}
    for session in sessions:
        by_step.setdefault(session.step, []).append(session)

    steps: list[StepRow] = []
    # Each session's wall time goes to one model, so the breakdown's times add up: the model that
    # processed most of its tokens, or for a session without figures the step's first model.
    main_models: list[tuple[_Run, str]] = []
    for name, group in by_step.items():
        used = _unique(model for s in group for model in s.figures)
        models = used or _unique(s.run.model or _DEFAULT_MODEL for s in group)
        main_models += [(s, s.main_model(fallback=models[0])) for s in group]
        steps.append(
            StepRow(
                step=name,
                models=models,
                sessions=len(group),
                usage=_sum(s.run.usage.total for s in group),
                seconds=sum(s.seconds for s in group),
                loc_changed=_measured_sum(s.run.loc_changed for s in group),
                started_at=group[0].start,
                non_anthropic=any(s.non_anthropic for s in group),
                partial=any(s.gap is not None for s in group),
            )
        )

    model_rows: list[ModelRow] = []
    for model in _unique(model for row in steps for model in row.models):
        timed = [s for s, main in main_models if main == model]
        counted = [s for s in sessions if model in s.figures]
        model_rows.append(
            ModelRow(
                model=model,
                steps=sum(1 for row in steps if model in row.models),
                usage=_sum(s.figures[model] for s in counted),
                seconds=sum(s.seconds for s in timed),
                non_anthropic=not is_anthropic_model(model) or any(s.foreign_base_url for s in [*timed, *counted]),
            )
        )

    total_usage = _sum(row.usage for row in steps)
    total_loc = _tree_loc(every_run)
    return UsageReport(
        campaign_id=campaign_id,
        job_name=job_name,
        steps=steps,
        total=TotalRow(
            sessions=len(sessions),
            usage=total_usage,
            seconds=_elapsed(every_run),
            loc_changed=total_loc,
            partial=any(row.partial for row in steps),
        ),
        efficiency=[_efficiency(row.step, row.usage, row.loc_changed) for row in steps],
        efficiency_total=_efficiency("Total", total_usage, total_loc),
        models=model_rows,
        footnotes=_footnotes(sessions),
    )


def campaign_runs(store: CampaignStore, campaign_id: str, job_name: str | None = None) -> list[RunRecord]:
    """The runs of a campaign (or of one of its jobs), with every run they called, however deep, oldest first.

    A dispatched orchestrator's run_skill calls are recorded without a campaign, under its
    session id as their caller; they belong to the campaign all the same. Each level is one
    indexed lookup per caller, so a large store is never read whole.
    """
    # Keyed by launch: a resumed session has one record per launch, and each counts.
    members = {(run.run_id, run.launch): run for run in store.list_runs(campaign_id, job_name=job_name)}
    seen = {run_id for run_id, _ in members}
    callers = list(seen)
    while callers:
        called = [run for caller in callers for run in store.list_runs(caller_session_id=caller)]
        callers = list(dict.fromkeys(run.run_id for run in called if run.run_id not in seen))
        seen.update(callers)
        members.update(((run.run_id, run.launch), run) for run in called)
    return sorted(members.values(), key=lambda run: (run.started_at, run.run_id, run.launch))


def campaign_report(
    store: CampaignStore,
    campaign_id: str,
    job_name: str | None = None,
    *,
    now: float | None = None,
    prices: Mapping[str, Price] | None = None,
) -> UsageReport:
    """The usage report of a campaign, or of one job of it, as recorded in ``store``.

    A session still running has no final figures yet; what it spent so far stands in (partial,
    ``figures_so_far``). Each budget set for the campaign (or that job) is shown beside its spend,
    priced with ``prices`` over the built-in table.
    """
    runs = [_with_figures_so_far(run, store.host) for run in campaign_runs(store, campaign_id, job_name)]
    report = build_report(runs, campaign_id=campaign_id, job_name=job_name, now=now)
    budgets = [
        budget_row(budget, campaign_spending(store, campaign_id, budget.job_name, prices=prices))
        for budget in store.list_budgets(campaign_id)
        if job_name is None or budget.job_name in (None, job_name)
    ]
    records = [store.get(campaign_id, job_name)] if job_name is not None else store.list(campaign_id)
    branches = [
        JobBranch(job_name=record.name, branch=record.branch, worktree=record.worktree)
        for record in records
        if record is not None and record.branch is not None
    ]
    return report.model_copy(update={"budgets": budgets, "branches": branches})


def campaign_spending(
    store: CampaignStore, campaign_id: str, job_name: str | None = None, *, prices: Mapping[str, Price] | None = None
) -> Spending:
    """What the campaign (or one job of it) has spent: every run it recorded, and the running ones so far."""
    runs = campaign_runs(store, campaign_id, job_name)
    return spending((_with_figures_so_far(run, store.host) for run in runs), prices)


def figures_so_far(run: RunRecord, *, host: str) -> SessionUsage | None:
    """What a run that has not ended spent so far (partial); None when unknown.

    ``host`` is this host's name (``CampaignStore.host``). A run owned here is read from its
    transcript, on a first launch (a resumed session's transcript also holds its earlier launches'
    turns). A run owned by another host has its transcript there, not here: no file is opened, and
    the figures its supervisor last pushed to the store stand in; so they do for a resumed launch.
    """
    if run.status is not RunStatus.RUNNING:
        return None
    stored = None if run.usage.source is UsageSource.NONE else run.usage.model_copy(update={"partial": True})
    if run.owner.host != host or run.transcript_path is None or run.launch != 1:
        return stored
    so_far = usage_from_transcript(Path(run.transcript_path))
    return stored if so_far.source is UsageSource.NONE else so_far


def _with_figures_so_far(run: RunRecord, host: str) -> RunRecord:
    so_far = figures_so_far(run, host=host)
    return run if so_far is None else run.model_copy(update={"usage": so_far})


def job_usage(runs: Sequence[RunRecord]) -> SessionUsage:
    """The usage of several runs as one (a dispatch: its orchestrator and the skills it ran).

    ``partial`` also when a run's figures are missing because it is still running or was interrupted.
    """
    combined = SessionUsage()
    for run in runs:
        combined = combined + run.usage
    return combined.model_copy(update={"partial": any(_gap(run) is not None for run in runs)})
