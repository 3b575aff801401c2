"""The token usage report of a campaign or job: what the markdown, JSON and terminal renderers show.

Three tables, as users paste them into pull requests: one row per step (Token Usage Summary),
lines changed per step (Token Efficiency), and one row per model (Model Usage Breakdown).
Flags on rows point at footnotes: ``*`` for a session served by a provider other than
Anthropic, ``†`` for figures that are incomplete (a session that ended before its ``result``
event, or one still running).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from expeditor.times import Timestamp
from expeditor.usage.models import TokenUsage

__all__ = [
    "NON_ANTHROPIC_MARK",
    "PARTIAL_MARK",
    "BudgetRow",
    "EfficiencyRow",
    "Footnote",
    "JobBranch",
    "ModelRow",
    "StepRow",
    "TotalRow",
    "UsageReport",
]

NON_ANTHROPIC_MARK = "*"
PARTIAL_MARK = "†"


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True)


class StepRow(_Row):
    """One step: every session launched for it, retries and resumes included."""

    step: str = Field(description="The step name, or the skill command of a run_skill call.")
    models: list[str] = Field(description="The models its sessions used, in order of first use.")
    sessions: int = Field(ge=1, description="Sessions launched for the step (the count column).")
    usage: TokenUsage = Field(description="Summed over its sessions; peak_context is the largest of them.")
    seconds: float = Field(ge=0, description="Wall time of its sessions, added up.")
    loc_changed: int | None = Field(
        default=None, ge=0, description="Lines added plus removed by its sessions; None when none was measured."
    )
    started_at: Timestamp = Field(description="When its first session started (rows are in this order).")
    non_anthropic: bool = Field(description="A session was served by a provider other than Anthropic.")
    partial: bool = Field(description="A session's figures are incomplete (see the footnotes).")


class TotalRow(_Row):
    """The whole report: sums, the largest peak context, and the time anything was running."""

    sessions: int = Field(ge=0, description="Sessions in the report.")
    usage: TokenUsage = Field(description="Summed over every session; peak_context is the largest.")
    seconds: float = Field(
        ge=0, description="Wall time during which at least one session ran: nested or parallel sessions count once."
    )
    loc_changed: int | None = Field(
        default=None,
        ge=0,
        description="Lines changed, each session tree once: a session's measure already holds the changes of the "
        "sessions it called in the same working directory.",
    )
    partial: bool = Field(description="Some figures are incomplete (see the footnotes).")


class EfficiencyRow(_Row):
    """Tokens per line changed; the ratios are None when nothing (or nothing measured) changed."""

    step: str = Field(description="The step, as in the summary table.")
    loc_changed: int | None = Field(default=None, ge=0, description="Lines added plus removed.")
    cache_read_per_loc: float | None = Field(default=None, description="Cache-read tokens per line changed.")
    cache_write_per_loc: float | None = Field(default=None, description="Cache-write tokens per line changed.")
    output_per_loc: float | None = Field(default=None, description="Output tokens per line changed.")


class ModelRow(_Row):
    """One model across the report."""

    model: str = Field(description="The model id.")
    steps: int = Field(ge=0, description="Steps whose sessions used the model.")
    usage: TokenUsage = Field(description="The model's tokens across the report.")
    seconds: float = Field(
        ge=0, description="Wall time of the sessions whose main model (the one that processed most tokens) it is."
    )
    non_anthropic: bool = Field(description="It was served by a provider other than Anthropic.")


class Footnote(_Row):
    """A note printed under the first table, and the mark that points at it from the rows."""

    mark: str = Field(description="The mark rows carry: * or †.")
    text: str = Field(description="What the mark means.")


class BudgetRow(_Row):
    """A budget of the campaign or of one of its jobs, beside what its runs spent."""

    scope: str = Field(description="What it bounds: 'campaign <id>' or 'job <campaign>/<job>'.")
    max_budget_usd: float | None = Field(default=None, description="Its limit in USD; None when it has none.")
    spent_usd: float = Field(ge=0, description="What its runs cost: their reported costs, and estimates.")
    estimate: bool = Field(description="Part of spent_usd is estimated from tokens (runs that died before their cost).")
    unpriced_runs: int = Field(ge=0, description="Runs whose cost is unknown (a model no price matches).")
    max_tokens: int | None = Field(default=None, description="Its token limit; None when it has none.")
    spent_tokens: int = Field(ge=0, description="Tokens its runs used: input, output, cache reads and writes.")


class JobBranch(_Row):
    """A job run in a git worktree of its own: the branch holding its commits, and where the worktree was."""

    job_name: str = Field(description="The job.")
    branch: str = Field(description="Its git branch (expeditor/<campaign>/<job>): the job's deliverable.")
    worktree: str | None = Field(default=None, description="Its worktree (removed once the job succeeded).")


class UsageReport(BaseModel):
    """Token usage per step, in total, per line changed and per model, with the footnotes its flags point at."""

    model_config = ConfigDict(frozen=True)

    campaign_id: str | None = Field(default=None, description="The campaign reported on.")
    job_name: str | None = Field(default=None, description="The one job reported on; None for the whole campaign.")
    steps: list[StepRow] = Field(default_factory=list[StepRow], description="Token Usage Summary: one row per step.")
    total: TotalRow = Field(description="The summary's total row.")
    efficiency: list[EfficiencyRow] = Field(
        default_factory=list[EfficiencyRow], description="Token Efficiency: tokens per line changed, per step."
    )
    efficiency_total: EfficiencyRow = Field(description="Token Efficiency over the whole report.")
    models: list[ModelRow] = Field(
        default_factory=list[ModelRow], description="Model Usage Breakdown: one row per model."
    )
    footnotes: list[Footnote] = Field(default_factory=list[Footnote], description="What the rows' marks mean.")
    budgets: list[BudgetRow] = Field(
        default_factory=list[BudgetRow], description="Budgets: each set for the campaign or a job, beside its spend."
    )
    branches: list[JobBranch] = Field(
        default_factory=list[JobBranch], description="The git branch of each job that ran in a worktree of its own."
    )
