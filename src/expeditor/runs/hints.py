"""What to do when a run could not start because its agent is not installed: said over MCP and on the CLI."""

from __future__ import annotations

import os
from pathlib import Path

from expeditor.config import Settings
from expeditor.executor import RunResult, Termination
from expeditor.executor.spawning import resolve_executable

__all__ = ["LAUNCH_HINT", "launch_hint"]

LAUNCH_HINT = (
    "Install Claude Code (`npm install -g @anthropic-ai/claude-code`) or set EXPEDITOR_CLAUDE_COMMAND to the agent "
    "command to run (e.g. `expeditor-fake-agent` to try expeditor without an API key)."
)


def launch_hint(result: RunResult, settings: Settings) -> str | None:
    """The hint for a run that could not start because the agent command is not installed, else None."""
    if result.termination is not Termination.LAUNCH_FAILED:
        return None
    argv = settings.claude_argv
    if argv and resolve_executable(argv[0], os.environ, Path.cwd()) is not None:
        return None  # the agent is there: the launch failed for the reason given, not for want of it
    return LAUNCH_HINT
