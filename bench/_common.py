"""Shared set-up for the benchmark scripts: a temporary home and the fake agent as the agent command."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from expeditor.config import Settings, load_settings
from expeditor.executor import RunRequest

FAKE_AGENT = [sys.executable, "-m", "expeditor.testing.fake_agent"]


def bench_settings(root: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": root / "home",
        "claude_command": " ".join(FAKE_AGENT),
        "claude_config_dir": root / "claude",
        "allowed_roots": (root,),
        **overrides,
    }
    return load_settings(**values)


def scenario_request(cwd: Path, scenario: dict[str, Any], **fields: Any) -> RunRequest:
    env = {"EXPEDITOR_FAKE_SCENARIO": json.dumps(scenario), **fields.pop("env", {})}
    return RunRequest(prompt="/bench", cwd=cwd, env=env, **fields)


def temp_root() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="expeditor-bench-")


def describe(label: str, samples_s: list[float]) -> str:
    ms = sorted(sample * 1000 for sample in samples_s)
    median = statistics.median(ms)
    return f"{label}: median {median:.1f} ms, min {ms[0]:.1f} ms, max {ms[-1]:.1f} ms (n={len(ms)})"
