"""expeditor: launch and supervise headless Claude Code sessions, and never rerun finished work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from expeditor.config import Settings
    from expeditor.errors import ExpeditorError

__all__ = ["ExpeditorError", "Settings", "__version__"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy: `python -m expeditor.testing.fake_agent` must not pay for pydantic-settings at start-up.
    if name == "Settings":
        from expeditor.config import Settings

        return Settings
    if name == "ExpeditorError":
        from expeditor.errors import ExpeditorError

        return ExpeditorError
    raise AttributeError(f"module 'expeditor' has no attribute {name!r}")
