"""Token usage of a session, in total and per model.

The true totals of a Claude Code session are in its ``result`` event; stdout ``assistant``
events repeat a message's opening usage once per content block and must never be summed.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SessionUsage", "TokenUsage", "UsageSource"]


class TokenUsage(BaseModel):
    """Token counts for one scope (a session, or one model within it)."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = Field(default=0, ge=0, description="Uncached input tokens.")
    output_tokens: int = Field(default=0, ge=0, description="Output tokens.")
    cache_read_tokens: int = Field(default=0, ge=0, description="Input tokens read from the prompt cache.")
    cache_write_tokens: int = Field(default=0, ge=0, description="Input tokens written to the prompt cache.")
    turns: int = Field(default=0, ge=0, description="Assistant turns (the result event's num_turns).")
    peak_context: int = Field(default=0, ge=0, description="Largest single-message input + cache_read + cache_write.")
    cost_usd: float | None = Field(default=None, ge=0, description="Cost reported by the CLI, when known.")

    @property
    def all_tokens(self) -> int:
        """Every token counted: uncached and cached input, cache writes and output."""
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        cost = (
            None if self.cost_usd is None and other.cost_usd is None else (self.cost_usd or 0) + (other.cost_usd or 0)
        )
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            turns=self.turns + other.turns,
            peak_context=max(self.peak_context, other.peak_context),
            cost_usd=cost,
        )


class UsageSource(StrEnum):
    """Where a session's usage figures were taken from."""

    RESULT_EVENT = "result_event"
    TRANSCRIPT = "transcript"
    NONE = "none"


class SessionUsage(BaseModel):
    """One session's usage: totals, per model, and how trustworthy the figures are."""

    model_config = ConfigDict(frozen=True)

    total: TokenUsage = Field(default_factory=TokenUsage, description="Every model together.")
    by_model: dict[str, TokenUsage] = Field(default_factory=dict, description="Per model id.")
    source: UsageSource = Field(
        default=UsageSource.NONE,
        description="Where the figures come from: result_event (exact), transcript (the session died first) or none.",
    )
    partial: bool = Field(default=False, description="True when the session died before its result event.")
    duration_ms: int | None = Field(default=None, ge=0, description="The CLI's own duration_ms.")

    def __add__(self, other: SessionUsage) -> SessionUsage:
        """Usage of two sessions (or runs) together: totals summed, models merged, partial if either is."""
        by_model = dict(self.by_model)
        for model, usage in other.by_model.items():
            by_model[model] = by_model[model] + usage if model in by_model else usage
        partial = self.partial or other.partial
        if self.source is UsageSource.NONE and other.source is UsageSource.NONE:
            source = UsageSource.NONE
        else:
            source = UsageSource.TRANSCRIPT if partial else UsageSource.RESULT_EVENT
        durations = [d for d in (self.duration_ms, other.duration_ms) if d is not None]
        return SessionUsage(
            total=self.total + other.total,
            by_model=by_model,
            source=source,
            partial=partial,
            duration_ms=sum(durations) if durations else None,
        )
