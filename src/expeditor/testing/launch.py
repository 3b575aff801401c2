"""Launching the fake agent from tests and the demo: its command line, its files, its invocation log.

Standard library only, so importing ``expeditor.testing`` stays as cheap as the agent's own start-up.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from expeditor.claude_paths import transcript_path

__all__ = ["fake_agent_command", "fake_agent_env", "read_invocation_log", "stream_events", "transcript_path"]


def fake_agent_command() -> list[str]:
    """The argv prefix that runs the fake agent with this interpreter; append Claude Code flags."""
    return [sys.executable, "-m", "expeditor.testing.fake_agent"]


def fake_agent_env(
    base: Mapping[str, str],
    *,
    config_dir: Path,
    log: Path | None = None,
    scenario: str | None = None,
) -> dict[str, str]:
    """``base`` with the agent's config dir, log and scenario set, and no inherited scenario or caller id.

    ``scenario`` is a file path or inline JSON/YAML text, as ``EXPEDITOR_FAKE_SCENARIO`` takes it.
    """
    env = {
        key: value
        for key, value in base.items()
        if key not in ("EXPEDITOR_FAKE_SCENARIO", "EXPEDITOR_FAKE_LOG", "CLAUDE_CODE_SESSION_ID")
    }
    env["CLAUDE_CONFIG_DIR"] = str(config_dir)
    if log is not None:
        env["EXPEDITOR_FAKE_LOG"] = str(log)
    if scenario is not None:
        env["EXPEDITOR_FAKE_SCENARIO"] = scenario
    return env


def read_invocation_log(path: Path) -> list[dict[str, Any]]:
    """Every record of an ``EXPEDITOR_FAKE_LOG`` file, oldest first; none when it does not exist."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def launched_prompts(path: Path) -> list[str]:
    """The prompt (the argument after ``-p``) of every launch in an invocation log, oldest first."""
    prompts = []
    for record in read_invocation_log(path):
        if record["event"] == "launch" and "-p" in record["argv"]:
            argv = record["argv"]
            prompts.append(argv[argv.index("-p") + 1])
    return prompts


def stream_events(stdout: str) -> list[dict[str, Any]]:
    """The JSON objects of a stream-json stdout, one per line; raises on a line that is not JSON."""
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]
