"""kill -9 the dispatching process mid-run: the record survives, the next dispatch resumes the session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from expeditor.claude_paths import transcript_path
from expeditor.server.app import build_server
from expeditor.state import DispatchStatus, RunStatus, SqliteCampaignStore
from expeditor.testing import read_invocation_log
from tests.support.fake import FAKE_AGENT_COMMAND, fake_settings

pytestmark = pytest.mark.anyio

HANGING = {"steps": [{"assistant": "Step 1 of 3 done."}, {"hang": True}]}
FINISHING = {"steps": [{"assistant": "Resumed: steps 2 and 3 done."}, {"result": {}}]}


def launches(tmp_path: Path) -> list[dict[str, Any]]:
    return [entry for entry in read_invocation_log(tmp_path / "agent.log") if entry["event"] == "launch"]


def start_and_kill_a_dispatch(tmp_path: Path) -> str:
    """Run `expeditor dispatch` as a process, SIGKILL it once its orchestrator is running; the session id."""
    env = {
        **os.environ,
        "EXPEDITOR_HOME": str(tmp_path / "home"),
        "EXPEDITOR_CLAUDE_COMMAND": FAKE_AGENT_COMMAND,
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
        "EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR": json.dumps(HANGING),
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
        "EXPEDITOR_SESSION_ID": str(uuid.uuid4()),
    }
    dispatcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "expeditor",
            "dispatch",
            "c1",
            "job1",
            "--recipe",
            "diagnose",
            "--input",
            "problem=x",
            "--cwd",
            str(tmp_path),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        # Another process's progress: there is no event to wait on, only its files.
        while not launches(tmp_path) or not _transcript_written(tmp_path):
            assert time.monotonic() < deadline, "the dispatched orchestrator never started"
            time.sleep(0.05)
    finally:
        dispatcher.send_signal(signal.SIGKILL)
        dispatcher.wait()
    (launch,) = launches(tmp_path)
    session_id = str(launch["session_id"])
    deadline = time.monotonic() + 5
    while _alive(launch["pid"]):  # the session guard kills the orchestrator when its server dies
        assert time.monotonic() < deadline, "the orchestrator outlived its dispatcher"
        time.sleep(0.05)
    return session_id


def _transcript_written(tmp_path: Path) -> bool:
    (launch,) = launches(tmp_path)
    path = transcript_path(tmp_path / "claude", tmp_path.resolve(), launch["session_id"])
    return path.exists() and b"Step 1 of 3" in path.read_bytes()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return stat.read().split(b") ")[1][:1] != b"Z"


async def redispatch(tmp_path: Path) -> dict[str, Any]:
    settings = fake_settings(tmp_path)
    env = {
        **os.environ,
        "EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR": json.dumps(FINISHING),
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
    }
    async with Client(build_server(settings, env=env)) as client:
        result = await client.call_tool(
            "dispatch",
            {"campaign": "c1", "name": "job1", "recipe": "diagnose", "inputs": {"problem": "x"}, "cwd": str(tmp_path)},
        )
    assert result.structured_content is not None, result.content
    return result.structured_content


async def test_a_killed_dispatch_is_interrupted_and_resumed_with_its_session(tmp_path: Path) -> None:
    prior = start_and_kill_a_dispatch(tmp_path)
    store = SqliteCampaignStore(tmp_path / "home" / "state.sqlite3")
    try:
        record = store.get("c1", "job1")
        assert record is not None
        assert record.status is DispatchStatus.RUNNING  # the record survived the kill
        assert record.dispatched_session_id == prior
    finally:
        store.close()
    outcome = await redispatch(tmp_path)
    assert outcome["status"] == "success", outcome["message"]
    assert outcome["resumed"] is True
    assert outcome["attempts"] == 2
    assert outcome["dispatched_session_id"] == prior
    second = launches(tmp_path)[1]["argv"]
    assert second[second.index("--resume") + 1] == prior
    assert "--session-id" not in second
    store = SqliteCampaignStore(tmp_path / "home" / "state.sqlite3")
    try:
        runs = store.list_runs("c1", job_name="job1")
        assert [(run.launch, run.status) for run in runs] == [(1, RunStatus.INTERRUPTED), (2, RunStatus.SUCCESS)]
    finally:
        store.close()


async def test_without_the_prior_transcript_the_retry_starts_fresh(tmp_path: Path) -> None:
    prior = start_and_kill_a_dispatch(tmp_path)
    transcript_path(tmp_path / "claude", tmp_path.resolve(), prior).unlink()
    outcome = await redispatch(tmp_path)
    assert outcome["status"] == "success", outcome["message"]
    assert outcome["resumed"] is False
    assert outcome["dispatched_session_id"] != prior
    second = launches(tmp_path)[1]["argv"]
    assert "--resume" not in second
    assert second[second.index("--session-id") + 1] == outcome["dispatched_session_id"]
