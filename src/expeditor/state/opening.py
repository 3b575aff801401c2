"""The one place a campaign store is opened from settings.

SQLite under the home is the embedded default; a shared store for many hosts is chosen here too
when there is one, so every entry point (server, CLI, pipeline runner, status, reports) agrees.
"""

from __future__ import annotations

from expeditor.config import Settings
from expeditor.state.sqlite import SqliteCampaignStore
from expeditor.state.store import CampaignStore

__all__ = ["open_store"]


def open_store(settings: Settings) -> CampaignStore:
    """The campaign store ``settings`` name, opened (the caller closes it)."""
    return SqliteCampaignStore(settings.state_path)
