"""Helpers to run the real executor against the fake agent with small, explicit timings."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from expeditor.config import Settings, load_settings
from expeditor.executor import ClaudeCodeExecutor, RunRequest
from expeditor.runs import build_executor

FAKE_AGENT_COMMAND = f"{sys.executable} -m expeditor.testing.fake_agent"

# Every timing a test does not set is long, so only the mechanism under test can end a run.
QUIET_TIMINGS: dict[str, float] = {
    "timeout": 60,
    "stale_threshold": 60,
    "poll_interval": 0.05,
    "children_interval": 0.2,
    "kill_grace": 0.5,
    "result_exit_grace": 0.3,
    "marker_freshness": 2,
    "marker_heartbeat_interval": 0.1,
}


def fake_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": tmp_path / "home",
        "claude_command": FAKE_AGENT_COMMAND,
        "claude_config_dir": tmp_path / "claude",
        "allowed_roots": (tmp_path,),
        **QUIET_TIMINGS,
        **overrides,
    }
    return load_settings(**values)


def scenario_request(cwd: Path, scenario: dict[str, Any], **fields: Any) -> RunRequest:
    """A request whose fake agent follows ``scenario`` (passed through the environment)."""
    env = {"EXPEDITOR_FAKE_SCENARIO": json.dumps(scenario), **fields.pop("env", {})}
    return RunRequest(prompt=fields.pop("prompt", "/fake-skill"), cwd=cwd, env=env, **fields)


def fake_executor(settings: Settings) -> ClaudeCodeExecutor:
    return build_executor(settings)


def suppressed_for(reason: str) -> float:
    """How long a marker held the verdict back, from a verdict's reason that the max_suppression_seconds bound ended.

    Timed when the bound fired. ``suppressed_s`` instead adds up the intervals between the polls that found
    the marker and misses the last one (the poll that finds the bound reached), so on a busy machine, whose
    polls are spaced out, it falls short of the bound.
    """
    found = re.search(r"for ([0-9.]+)s, the max_suppression_seconds bound", reason)
    assert found is not None, reason
    return float(found[1])
