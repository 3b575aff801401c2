"""`expeditor recipe run` as a real process: killed or interrupted mid-step, rerun, resumed where it stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from expeditor.claude_paths import transcript_path
from expeditor.state import DispatchStatus, RunStatus, SqliteCampaignStore, StepStatus
from expeditor.testing import launched_prompts, read_invocation_log
from tests.support.fake import FAKE_AGENT_COMMAND

HANG = json.dumps(
    {"steps": [{"assistant": {"content": "working", "usage": {"input": 3, "output": 7}}}, {"hang": True}]}
)
FINISH = json.dumps({"steps": [{"result": "finished"}]})

FIVE_STEPS = """\
name: five
description: five skill steps
orchestrator: pipeline
steps:
  one: {skill: /one}
  two: {skill: /two}
  three: {skill: /three}
  four: {skill: /four}
  five: {skill: /five}
"""


def environment(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "EXPEDITOR_CLAUDE_COMMAND": FAKE_AGENT_COMMAND,
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
        "EXPEDITOR_KILL_GRACE": "0.5",
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
        "EXPEDITOR_FAKE_SCENARIO_DIR": str(tmp_path / "scenarios"),
    }


def recipe_run(tmp_path: Path, third: str) -> list[str]:
    """The command line, with ``third`` as what the fake agent does for step three this time."""
    home = tmp_path / "home"
    (home / "recipes").mkdir(parents=True, exist_ok=True)
    (home / "recipes" / "five.yaml").write_text(FIVE_STEPS)
    (tmp_path / "scenarios").mkdir(exist_ok=True)
    (tmp_path / "scenarios" / "three.json").write_text(third)
    return [
        sys.executable,
        "-m",
        "expeditor",
        "--home",
        str(home),
        "recipe",
        "run",
        "five",
        "--campaign",
        "nightly",
        "--cwd",
        str(tmp_path),
    ]


def launched_steps(tmp_path: Path) -> list[str]:
    return [prompt.split()[0] for prompt in launched_prompts(tmp_path / "agent.log")]


def rerun_to_the_end(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = environment(tmp_path)
    return subprocess.run(
        recipe_run(tmp_path, FINISH), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def start_until_step_three_runs(tmp_path: Path) -> subprocess.Popen[str]:
    runner = subprocess.Popen(
        recipe_run(tmp_path, HANG),
        env=environment(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: "/three" in launched_steps(tmp_path))
    wait_for(lambda: b"working" in step_three_transcript(tmp_path))  # it has begun its work
    return runner


def step_three_transcript(tmp_path: Path) -> bytes:
    launch = [entry for entry in read_invocation_log(tmp_path / "agent.log") if entry["event"] == "launch"][-1]
    path = transcript_path(tmp_path / "claude", Path(launch["cwd"]), launch["session_id"])
    return path.read_bytes() if path.exists() else b""


def session_processes(tmp_path: Path) -> list[psutil.Process]:
    """Fake agents (and their guards) launched for this test that are still alive."""
    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        try:
            ours = (process.info["environ"] or {}).get("EXPEDITOR_FAKE_LOG") == str(tmp_path / "agent.log")
            if ours and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_a_pipeline_killed_at_step_three_resumes_at_step_three(tmp_path: Path) -> None:
    runner = start_until_step_three_runs(tmp_path)
    runner.kill()
    runner.communicate(timeout=10)
    # The step's session dies with the runner (parent-death signal on its guard).
    wait_for(lambda: not session_processes(tmp_path))

    rerun = rerun_to_the_end(tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "recorded earlier; not run again" in rerun.stdout
    assert launched_steps(tmp_path) == ["/one", "/two", "/three", "/three", "/four", "/five"]
    store = SqliteCampaignStore(tmp_path / "home" / "state.sqlite3")
    try:
        record = store.get("nightly", "five")
        assert record is not None
        assert record.status is DispatchStatus.SUCCESS
        assert record.attempts == 2
        assert [e.status for e in store.list_steps("nightly", "five")] == [StepStatus.SUCCESS] * 5
        # What the killed runner left behind was cleaned up by the next one.
        killed_step = next(run for run in store.list_runs("nightly") if run.label == "three")
        assert killed_step.status is RunStatus.INTERRUPTED
        # What it spent before it died is taken from its transcript, marked partial.
        assert killed_step.usage.total.output_tokens == 7
        assert killed_step.usage.partial
        assert [run.status for run in store.list_runs(status=RunStatus.RUNNING)] == []
    finally:
        store.close()
    assert list((tmp_path / "home" / "markers").glob("*.marker")) == []
    assert list((tmp_path / "home" / "sessions").glob("*.json")) == []


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGINT,), (signal.SIGTERM,), (signal.SIGINT, signal.SIGTERM)],
    ids=["SIGINT", "SIGTERM", "SIGINT then SIGTERM, as Claude Code stops a server"],
)
def test_ctrl_c_during_a_step_leaves_nothing_and_the_rerun_resumes_there(
    tmp_path: Path, signals: tuple[signal.Signals, ...]
) -> None:
    stop = signals[0]
    runner = start_until_step_three_runs(tmp_path)
    started = time.monotonic()
    for number, sent in enumerate(signals):
        if number:
            time.sleep(0.02)
        runner.send_signal(sent)
    out, err = runner.communicate(timeout=20)
    elapsed = time.monotonic() - started
    assert runner.returncode == 130, out + err
    assert elapsed < 5, elapsed
    assert session_processes(tmp_path) == []
    assert list((tmp_path / "home" / "markers").glob("*.marker")) == []
    assert list((tmp_path / "home" / "sessions").glob("*.json")) == []
    store = SqliteCampaignStore(tmp_path / "home" / "state.sqlite3")
    try:
        steps = store.list_steps("nightly", "five")
        assert [(e.step, e.status) for e in steps][-1] == ("three", StepStatus.CANCELLED)
        three_run = store.get_run(steps[-1].run_id or "")
        assert three_run is not None
        assert three_run.status is RunStatus.CANCELLED
        assert signal.Signals(stop).name in (three_run.reason or "")
        record = store.get("nightly", "five")
        assert record is not None
        assert record.status is DispatchStatus.CANCELLED
    finally:
        store.close()

    rerun = rerun_to_the_end(tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert launched_steps(tmp_path) == ["/one", "/two", "/three", "/three", "/four", "/five"]


def test_a_finished_job_returns_at_once_and_force_runs_it_again(tmp_path: Path) -> None:
    env = environment(tmp_path)
    first = subprocess.run(recipe_run(tmp_path, FINISH), env=env, cwd=tmp_path, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(recipe_run(tmp_path, FINISH), env=env, cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0
    assert "already succeeded" in again.stdout
    assert len(launched_steps(tmp_path)) == 5
    forced = subprocess.run(
        [*recipe_run(tmp_path, FINISH), "--force"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert forced.returncode == 0, forced.stderr
    assert len(launched_steps(tmp_path)) == 10
    status = subprocess.run(
        [*recipe_run(tmp_path, FINISH)[:5], "status", "--campaign", "nightly"],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    assert "Pipeline nightly/five (5 step executions)" in status.stdout


def test_without_a_campaign_the_derived_one_is_printed_and_names_the_same_job(tmp_path: Path) -> None:
    env = environment(tmp_path)
    command = [part for part in recipe_run(tmp_path, FINISH) if part not in ("--campaign", "nightly")]
    first = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    second = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    campaign_line = first.stdout.splitlines()[0]
    assert campaign_line.startswith("campaign five-")
    assert second.stdout.splitlines()[0] == campaign_line
    assert "already succeeded" in second.stdout


def test_a_reader_that_goes_away_does_not_stop_the_pipeline(tmp_path: Path) -> None:
    # `expeditor recipe run ... | head -1`: the progress output breaks, the job still runs and is recorded.
    runner = subprocess.Popen(
        recipe_run(tmp_path, FINISH), env=environment(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert runner.stdout is not None
    runner.stdout.readline()
    runner.stdout.close()
    assert runner.wait(timeout=60) == 0
    assert launched_steps(tmp_path) == ["/one", "/two", "/three", "/four", "/five"]
    store = SqliteCampaignStore(tmp_path / "home" / "state.sqlite3")
    try:
        record = store.get("nightly", "five")
        assert record is not None
        assert record.status is DispatchStatus.SUCCESS
    finally:
        store.close()
