"""``expeditor marker hold``, the real CLI in a subprocess: it vouches for a session while its command runs,
stops when the command ends, however it ends, and exits with the command's status."""

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

import anyio
import psutil
import pytest

from expeditor.executor import RunControl, RunResult, Termination
from expeditor.monitor import parse_marker_name
from expeditor.runs import build_executor, open_runtime
from tests.support.fake import fake_settings, scenario_request, suppressed_for
from tests.support.marker_hold import marker_hold, marker_hold_argv

pytestmark = pytest.mark.anyio

THRESHOLD = 0.3
POLL = 0.05


async def test_a_held_marker_protects_its_session_while_the_command_runs_and_not_after(tmp_path: Path) -> None:
    session_id, markers = str(uuid.uuid4()), tmp_path / "markers"
    settings = fake_settings(tmp_path, stale_threshold=THRESHOLD, poll_interval=POLL)
    executor = build_executor(settings)
    request = scenario_request(
        tmp_path, {"steps": [{"assistant": "waiting on a build"}, {"hang": True}]}, session_id=session_id
    )
    results: list[RunResult] = []
    control = RunControl()
    marker_gone = 0.0

    async def supervise() -> None:
        results.append(await executor.run(request, marker_dir=markers, caller_session_id=None, control=control))

    holding = marker_hold(settings.home, session_id, "--label", "build", marker_dir=markers, exit_status=3)
    async with holding as holder, anyio.create_task_group() as group:
        group.start_soon(supervise)
        # From when the marker first holds the silent session's verdict back (however long a busy machine takes
        # to start the agent), protected for four thresholds more: without the marker it would be stale at once.
        with anyio.fail_after(30):
            while control.session is None or not control.session.suppressed_by:
                await anyio.sleep(POLL)
        await anyio.sleep(4 * THRESHOLD)
        assert not results, "the session ended while its marker was held"
        assert holder.stdin is not None
        await holder.stdin.aclose()
        with anyio.fail_after(10):
            while list(markers.iterdir()):  # a file: no event to wait on
                await anyio.sleep(0.01)
        marker_gone = time.time()  # not the holder's exit, which a busy machine can make late
        with anyio.fail_after(10):
            assert await holder.wait() == 3
    (result,) = results
    assert result.termination is Termination.STALE
    (held,) = result.suppressed_by
    assert parse_marker_name(held.marker) == ("build", session_id)
    # More than a threshold: how much more depends on when the agent's start-up activity went quiet.
    assert held.seconds > 2 * THRESHOLD
    # Once the command ended, its marker vouched no more: the session got one more threshold, then the verdict.
    assert result.ended_at is not None
    # (The upper slack is for a busy machine: the verdict and the kill each wait their turn.)
    assert marker_gone - 0.2 <= result.ended_at - THRESHOLD <= marker_gone + POLL + 1.0
    assert list(markers.iterdir()) == []


async def test_a_held_marker_without_expires_in_stops_protecting_after_max_suppression_seconds(
    tmp_path: Path,
) -> None:
    session_id, markers = str(uuid.uuid4()), tmp_path / "markers"
    settings = fake_settings(tmp_path, stale_threshold=THRESHOLD, poll_interval=POLL, max_suppression_seconds=0.5)
    request = scenario_request(tmp_path, {"steps": [{"assistant": "waiting"}, {"hang": True}]}, session_id=session_id)
    async with marker_hold(settings.home, session_id, marker_dir=markers) as holder:
        result = await build_executor(settings).run(request, marker_dir=markers, caller_session_id=None)
        assert holder.returncode is None  # the command still runs: the bound, not its end, ended the suppression
    assert result.termination is Termination.STALE
    assert 0.5 <= suppressed_for(result.reason) <= 1.0
    assert 0 < result.suppressed_s <= 1.0


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 128 + 15), (signal.SIGINT, 128 + 2)])
async def test_a_signal_reaches_the_command_and_the_marker_is_removed(
    tmp_path: Path, signum: signal.Signals, status: int
) -> None:
    markers, session_id = tmp_path / "markers", str(uuid.uuid4())
    async with marker_hold(tmp_path / "home", session_id, "--expires-in", "60", marker_dir=markers) as holder:
        (path,) = markers.iterdir()
        body: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        assert parse_marker_name(path.name) == ("hold", session_id)
        assert (body["version"], body["session_id"], body["pid"]) == (1, session_id, holder.pid)
        assert body["expires_at"] == pytest.approx(time.time() + 60, abs=10)
        holder.send_signal(signum)
        with anyio.fail_after(10):
            # The command (python, waiting on its stdin) dies of the forwarded signal; the holder says so.
            assert await holder.wait() == status
    assert list(markers.iterdir()) == []


def test_without_expires_in_the_marker_has_no_expiry_of_its_own(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    argv = marker_hold_argv(tmp_path / "home", "abc", command=[sys.executable, "-c", _PRINT_MARKER, str(markers)])
    done = subprocess.run(argv, env=_env(markers), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["expires_at"] is None
    assert list(markers.iterdir()) == []


_PRINT_MARKER = "import pathlib, sys; (path,) = pathlib.Path(sys.argv[1]).iterdir(); print(path.read_text())"


def _env(markers: Path) -> dict[str, str]:
    return {**os.environ, "EXPEDITOR_MARKER_DIR": str(markers)}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--session", "abc"], "needs a command to run"),
        (["--session", "abc", "--"], "needs a command to run"),
        (["--session", "../abc", "--", "true"], "session id '../abc' is not valid"),
        (["--session", "abc", "--label", "a-in-progress-b", "--", "true"], "marker label"),
        (["--session", "abc", "--", "/no/such/command"], "cannot run '/no/such/command'"),
    ],
)
def test_bad_input_gets_one_line_and_exit_status_2(tmp_path: Path, args: list[str], says: str) -> None:
    markers = tmp_path / "markers"
    argv = [sys.executable, "-m", "expeditor", "--home", str(tmp_path / "home"), "marker", "hold", *args]
    done = subprocess.run(argv, env=_env(markers), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("expeditor: ")
    assert says in line
    assert not markers.exists() or list(markers.iterdir()) == []


@pytest.mark.parametrize("args", [["--", "true"], ["--session", "abc", "--expires-in", "-5", "--", "true"]])
def test_bad_flags_get_the_usage_and_one_error_line(tmp_path: Path, args: list[str]) -> None:
    argv = [sys.executable, "-m", "expeditor", "--home", str(tmp_path / "home"), "marker", "hold", *args]
    done = subprocess.run(argv, env=_env(tmp_path / "markers"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: expeditor marker hold")
    assert len([line for line in done.stderr.splitlines() if "error:" in line]) == 1


async def test_the_next_start_removes_the_marker_of_a_holder_killed_with_sigkill(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    async with marker_hold(settings.home, "abc", marker_dir=settings.markers_path) as holder:
        (command,) = psutil.Process(holder.pid).children()
        holder.kill()  # no chance to clean up: the marker stays, its owner dead
        with anyio.fail_after(10):
            await holder.wait()
        (left,) = settings.markers_path.iterdir()
        assert holder.stdin is not None
        await holder.stdin.aclose()  # the orphaned command ends on end of input
        await anyio.to_thread.run_sync(command.wait, 10)
    async with open_runtime(settings):
        assert not left.exists()
