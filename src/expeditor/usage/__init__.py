"""Token usage, the low-level model: one session's figures, where its true numbers come from (the
``result`` event, or its transcript message by message), and the lines a run changed.

Reports over many recorded runs (aggregation, rendering, the ``report`` command) build on the
campaign store and live above it, in :mod:`expeditor.reports`.
"""

from expeditor.usage.loc import WorktreeState, lines_changed, worktree_state
from expeditor.usage.models import SessionUsage, TokenUsage, UsageSource
from expeditor.usage.transcript import usage_from_transcript

__all__ = [
    "SessionUsage",
    "TokenUsage",
    "UsageSource",
    "WorktreeState",
    "lines_changed",
    "usage_from_transcript",
    "worktree_state",
]
