"""Token usage: the model of one session's usage, and where its true numbers come from."""

from expeditor.usage.models import SessionUsage, TokenUsage, UsageSource

__all__ = ["SessionUsage", "TokenUsage", "UsageSource"]
