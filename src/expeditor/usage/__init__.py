"""Token usage: the model of one session's usage, and where its true numbers come from.

The reports over many runs (``aggregate``, ``render``, ``report``, ``commands``) are imported by
their module path, not from here: they build on the store's run records, which import this
package's models.
"""

from expeditor.usage.models import SessionUsage, TokenUsage, UsageSource

__all__ = ["SessionUsage", "TokenUsage", "UsageSource"]
