"""expeditor: launch and supervise headless Claude Code sessions, and never rerun finished work."""

from expeditor.config import Settings
from expeditor.errors import ExpeditorError

__all__ = ["ExpeditorError", "Settings", "__version__"]

__version__ = "0.1.0"
