"""The token usage report of a campaign or job: what the markdown, JSON and terminal renderers show.

Three tables, as users paste them into pull requests: one row per step (Token Usage Summary),
lines changed per step (Token Efficiency), and one row per model (Model Usage Breakdown).
Flags on rows point at footnotes: ``*`` for a session served by a provider other than
Anthropic, ``†`` for figures that are incomplete (a session that ended before its ``result``
event, or one still running).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from expeditor.usage.models import TokenUsage

__all__ = [
    "NON_ANTHROPIC_MARK",
    "PARTIAL_MARK",
    "EfficiencyRow",
    "Footnote",
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
    started_at: float = Field(description="When its first session started (rows are in this order).")
    non_anthropic: bool = Field(description="A session was served by a provider other than Anthropic.")
    partial: bool = Field(description="A session's figures are incomplete (see the footnotes).")


class TotalRow(_Row):
    """The whole report: sums, the largest peak context, and the time anything was running."""

    sessions: int = Field(ge=0)
    usage: TokenUsage
    seconds: float = Field(
        ge=0, description="Wall time during which at least one session ran: nested or parallel sessions count once."
    )
    loc_changed: int | None = Field(
        default=None,
        ge=0,
        description="Lines changed, each session tree once: a session's measure already holds the changes of the "
        "sessions it called in the same working directory.",
    )
    partial: bool


class EfficiencyRow(_Row):
    """Tokens per line changed; the ratios are None when nothing (or nothing measured) changed."""

    step: str
    loc_changed: int | None = Field(default=None, ge=0)
    cache_read_per_loc: float | None = None
    cache_write_per_loc: float | None = None
    output_per_loc: float | None = None


class ModelRow(_Row):
    """One model across the report."""

    model: str
    steps: int = Field(ge=0, description="Steps whose sessions used the model.")
    usage: TokenUsage
    seconds: float = Field(
        ge=0, description="Wall time of the sessions whose main model (the one that processed most tokens) it is."
    )
    non_anthropic: bool


class Footnote(_Row):
    """A note printed under the first table, and the mark that points at it from the rows."""

    mark: str
    text: str


class UsageReport(BaseModel):
    """Token usage per step, in total, per line changed and per model, with the footnotes its flags point at."""

    model_config = ConfigDict(frozen=True)

    campaign_id: str | None = None
    job_name: str | None = None
    steps: list[StepRow] = Field(default_factory=list[StepRow])
    total: TotalRow
    efficiency: list[EfficiencyRow] = Field(default_factory=list[EfficiencyRow])
    efficiency_total: EfficiencyRow
    models: list[ModelRow] = Field(default_factory=list[ModelRow])
    footnotes: list[Footnote] = Field(default_factory=list[Footnote])
