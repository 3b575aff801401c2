"""What the monitor's unit tests share: a run policy with only the durations a test names, and a live
session of this very process (its watchers and suppression policy need a session, not a child)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil

from expeditor.config import RunPolicy
from expeditor.executor.models import SessionKind
from expeditor.executor.session import LiveSession

# The durations a test does not name play no part in it.
_UNNAMED: dict[str, Any] = {
    "timeout": 7200,
    "stale_threshold": 1200,
    "idle_timeout": 1200,
    "poll_interval": 0.5,
    "children_interval": 5,
    "children_cpu_floor": 0.05,
    "marker_freshness": 30,
    "max_suppression_seconds": 3600,
    "longest_call": 14403,
    "markers_enabled": True,
    "kill_grace": 3,
    "result_exit_grace": 2,
}


def policy_with(**durations: Any) -> RunPolicy:
    return RunPolicy(**{**_UNNAMED, **durations})


def live_session(tmp_path: Path, policy: RunPolicy, *, marker_dir: Path | None, session_id: str = "abc") -> LiveSession:
    return LiveSession(
        session_id=session_id,
        kind=SessionKind.SKILL,
        process=psutil.Process(),
        pgid=os.getpgrp(),
        cwd=tmp_path,
        transcript_path=None,
        transcript_offset=0,
        policy=policy,
        marker_dir=marker_dir,
    )
