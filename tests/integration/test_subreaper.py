"""The server as a subreaper: adopted orphans are reaped without a walk, and those of ended sessions killed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(sys.platform != "linux", reason="child subreapers are a Linux feature")
def test_adopted_orphans_are_reaped_and_those_of_ended_sessions_killed() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.adopting", "live-session"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    seen = json.loads(done.stdout)
    pids = seen["pids"]
    assert pids["exited"] in seen["reaped"]
    assert seen["killed"] == [pids["ended"]]
