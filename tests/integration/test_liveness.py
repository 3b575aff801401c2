"""Telling a working session from a stuck one, through the public executor and real fake agents.

Thresholds are small and passed in; every "is not killed" test has a twin without the thing
that keeps the session alive, which is killed, so each test can fail.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from expeditor.executor import RunResult, SessionContainment, Termination, cgroups, choose_containment
from expeditor.runs import build_executor
from expeditor.testing import read_invocation_log
from tests.support.fake import fake_settings, scenario_request, suppressed_for

pytestmark = pytest.mark.anyio

THRESHOLD = 0.3
HOLD = 5 * THRESHOLD
DONE = [{"assistant": "finished"}, {"result": {}}]

# Which watcher is under test: its threshold is small, the other's large.
WATCHER_SETTINGS: dict[str, dict[str, Any]] = {
    "transcript": {"stale_threshold": THRESHOLD},
    "stdout": {"stale_threshold": 60, "idle_timeout": THRESHOLD},
}
EXPECTED_VERDICT = {"transcript": Termination.STALE, "stdout": Termination.IDLE_STALL}


async def run(
    tmp_path: Path,
    steps: list[dict[str, Any]],
    *,
    session_id: str | None = None,
    containment: SessionContainment | None = None,
    **settings: Any,
) -> RunResult:
    executor = build_executor(fake_settings(tmp_path, **settings), containment=containment)
    request = scenario_request(tmp_path, {"steps": steps}, session_id=session_id)
    return await executor.run(request, marker_dir=tmp_path / "markers", caller_session_id="the-caller")


def quiet_for(result: RunResult) -> float:
    """Seconds from the session's last signal (its spawn, if nothing ever moved) to its end.

    Not its duration, which counts the agent's start-up: a busy machine can spend seconds there.
    """
    assert result.started_at is not None
    assert result.ended_at is not None
    return result.ended_at - max(result.last_moved.values(), default=result.started_at)


def containment_of(kind: str) -> SessionContainment | None:
    """The tree (None), or a cgroup: skipped, saying why, where the machine allows none (failed under CI)."""
    if kind == "tree":
        return None
    try:
        return choose_containment("cgroup")
    except cgroups.CgroupUnavailable as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no cgroup containment here: {exc}")


def marker(**options: Any) -> dict[str, Any]:
    return {"marker": {"hold": HOLD, "heartbeat": 0.05, **options}}


@pytest.mark.parametrize("watcher", ["transcript", "stdout"])
async def test_a_silent_session_holding_a_fresh_marker_for_its_own_id_is_not_killed(
    tmp_path: Path, watcher: str
) -> None:
    result = await run(tmp_path, [{"assistant": "calling a long tool"}, marker(), *DONE], **WATCHER_SETTINGS[watcher])
    assert result.success, result.reason
    # The marker held the verdict back for more than a whole threshold. How much more depends on
    # when the other signals (the agent's own start-up CPU counts as child activity) went quiet.
    assert result.suppressed_s > THRESHOLD
    (suppression,) = result.suppressed_by
    assert "-in-progress-" in suppression.marker
    assert list((tmp_path / "markers").iterdir()) == []


@pytest.mark.parametrize("watcher", ["transcript", "stdout"])
async def test_the_same_silence_without_a_marker_is_killed(tmp_path: Path, watcher: str) -> None:
    result = await run(
        tmp_path, [{"assistant": "calling a long tool"}, {"sleep": HOLD}, *DONE], **WATCHER_SETTINGS[watcher]
    )
    assert result.termination is EXPECTED_VERDICT[watcher]
    assert quiet_for(result) < HOLD  # killed inside the silence, well before it would have ended
    assert "no active execution marker" in result.reason


OWN_ID = str(uuid.uuid4())


@pytest.mark.parametrize(
    ("case", "options", "settings"),
    [
        ("expired (not touched)", {"touch": False}, {"marker_freshness": 0.2}),
        ("another session", {"session_id": str(uuid.uuid4())}, {}),
        ("an id that merely starts with ours", {"session_id": f"{OWN_ID}-1"}, {}),
        ("a dead owner", {"owner": "dead"}, {}),
        ("past its expires_at", {"expires_in": 0.1}, {}),
    ],
)
async def test_markers_that_must_not_suppress_do_not(
    tmp_path: Path, case: str, options: dict[str, Any], settings: dict[str, Any]
) -> None:
    result = await run(
        tmp_path,
        [{"assistant": "calling"}, marker(**options), *DONE],
        session_id=OWN_ID,
        stale_threshold=THRESHOLD,
        **settings,
    )
    assert result.termination is Termination.STALE, case
    assert result.suppressed_s < THRESHOLD, case


async def test_suppression_ends_after_max_suppression_seconds_and_says_so(tmp_path: Path) -> None:
    result = await run(
        tmp_path,
        [{"assistant": "calling"}, marker(hold=10), *DONE],
        stale_threshold=THRESHOLD,
        max_suppression_seconds=0.5,
    )
    assert result.termination is Termination.STALE
    assert 0.5 <= suppressed_for(result.reason) <= 1.0
    assert 0 < result.suppressed_s <= 1.0
    assert quiet_for(result) < 3  # the bound ended it, not the marker's own 10 s


async def test_a_marker_is_trusted_until_its_expires_at_beyond_max_suppression(tmp_path: Path) -> None:
    result = await run(
        tmp_path,
        [{"assistant": "calling"}, marker(expires_in=30), *DONE],
        stale_threshold=THRESHOLD,
        max_suppression_seconds=0.3,
    )
    assert result.success, result.reason


class _MarkerWarnings(logging.Handler):
    """The warnings the marker reader logs in this process, whatever logging an earlier test configured."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def marker_warnings() -> Iterator[list[str]]:
    source, collected = logging.getLogger("expeditor.monitor.markers"), _MarkerWarnings()
    source.addHandler(collected)
    try:
        yield collected.messages
    finally:
        source.removeHandler(collected)


@pytest.mark.skipif(os.getpid() == 1, reason="pid 1 is this reader here, and the reader is always trusted")
async def test_a_session_that_forges_a_marker_for_itself_is_killed_at_its_threshold_plus_one_poll(
    tmp_path: Path, marker_warnings: list[str]
) -> None:
    # Owned by init, touched an hour into the future, expiring in an hour: every claim it can make for itself.
    poll, threshold = 0.1, 0.5
    forged = marker(hold=10 * threshold, owner_pid=1, mtime_ahead=3600, expires_in=3600)
    result = await run(tmp_path, [{"assistant": "calling"}, forged], stale_threshold=threshold, poll_interval=poll)
    assert result.termination is Termination.STALE
    assert result.suppressed_by == []
    assert result.ended_at is not None
    silence = result.ended_at - max(result.last_moved.values())
    assert threshold <= silence <= threshold + poll + 0.1
    (warning,) = [message for message in marker_warnings if "-in-progress-" in message]
    assert str(tmp_path / "markers") in warning


async def test_a_marker_whose_owner_is_not_an_expeditor_process_protects_nothing(
    tmp_path: Path, marker_warnings: list[str]
) -> None:
    async with await anyio.open_process(["sleep", "60"]) as stranger:
        try:
            result = await run(
                tmp_path,
                [{"assistant": "calling"}, marker(owner_pid=stranger.pid, expires_in=60), *DONE],
                stale_threshold=THRESHOLD,
            )
        finally:
            stranger.kill()
    assert result.termination is Termination.STALE
    assert result.suppressed_by == []
    # Looked at every poll while the session was silent, logged once.
    (warning,) = [message for message in marker_warnings if "-in-progress-" in message]
    assert "not an expeditor process" in warning


async def test_a_dispatch_marker_protects_its_caller_past_timeout_while_dispatch_timeout_is_larger(
    tmp_path: Path,
) -> None:
    # The caller is an orchestrator, whose own limit is dispatch_timeout; it waits longer than `timeout` (0.4 s)
    # plus kill_grace on a dispatch, whose marker is trusted until that dispatch's deadline.
    settings: dict[str, Any] = {"timeout": 0.4, "dispatch_timeout": 4, "kill_grace": 0.5, "stale_threshold": THRESHOLD}
    waiting = marker(hold=1.5, expires_in=settings["dispatch_timeout"] + settings["kill_grace"])
    executor = build_executor(fake_settings(tmp_path, **settings))
    request = scenario_request(
        tmp_path,
        {"steps": [{"assistant": "waiting on a dispatch"}, waiting, *DONE]},
        timeout=settings["dispatch_timeout"],
    )
    result = await executor.run(request, marker_dir=tmp_path / "markers", caller_session_id="the-caller")
    assert result.success, result.reason
    assert result.suppressed_s > settings["timeout"] + settings["kill_grace"] - THRESHOLD


async def test_with_markers_disabled_the_marker_keeps_nobody_alive(tmp_path: Path) -> None:
    result = await run(
        tmp_path,
        [{"assistant": "calling"}, marker(), *DONE],
        stale_threshold=THRESHOLD,
        markers_enabled=False,
    )
    assert result.termination is Termination.STALE
    assert result.suppressed_by == []


@pytest.mark.parametrize("directory", ["plain", "with.dots_and_under scores v1.2"])
async def test_a_growing_transcript_keeps_a_stdout_silent_session_alive(tmp_path: Path, directory: str) -> None:
    work = tmp_path / directory
    work.mkdir()
    executor = build_executor(fake_settings(tmp_path, stale_threshold=THRESHOLD, idle_timeout=THRESHOLD))
    ticking = {"tick": {"interval": 0.05, "duration": HOLD, "to": "transcript"}}
    request = scenario_request(work, {"steps": [{"assistant": "working"}, ticking, *DONE]})
    result = await executor.run(request, marker_dir=None, caller_session_id=None)
    assert result.success, result.reason


async def test_stdout_output_keeps_a_transcript_silent_session_alive(tmp_path: Path) -> None:
    ticking = {"tick": {"interval": 0.05, "duration": HOLD, "to": "stdout"}}
    result = await run(tmp_path, [{"assistant": "working"}, ticking, *DONE], stale_threshold=THRESHOLD)
    assert result.success, result.reason


@pytest.mark.parametrize("kind", ["tree", "cgroup"])
async def test_busy_children_keep_a_silent_session_alive(tmp_path: Path, kind: str) -> None:
    # With a cgroup the activity is the group's members and its cpu.stat, not a walk of the process table.
    containment = containment_of(kind)
    busy = {"spawn": {"sleep": HOLD, "burn_cpu": True, "wait": True}}
    try:
        result = await run(
            tmp_path,
            [{"assistant": "compiling"}, busy, *DONE],
            containment=containment,
            stale_threshold=0.6,
            children_interval=0.1,
            poll_interval=0.05,
        )
    finally:
        if containment is not None:
            containment.close()
    assert result.success, result.reason
    assert result.containment == kind


async def test_a_stalled_session_is_killed_within_threshold_plus_one_poll(tmp_path: Path) -> None:
    poll, threshold = 0.1, 0.5
    result = await run(
        tmp_path, [{"assistant": "thinking"}, {"hang": True}], stale_threshold=threshold, poll_interval=poll
    )
    assert result.termination is Termination.STALE
    assert result.ended_at is not None
    silence = result.ended_at - max(result.last_moved.values())
    # The verdict, plus a SIGTERM kill of a few milliseconds.
    assert threshold <= silence <= threshold + poll + 0.1


async def test_a_session_killed_as_stale_leaves_no_double_forked_daemon(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    executor = build_executor(fake_settings(tmp_path, stale_threshold=THRESHOLD))
    steps = [
        {"spawn": {"sleep": 60, "double_fork": True, "close_stdio": True}},
        {"assistant": "waiting"},
        {"hang": True},
    ]
    request = scenario_request(tmp_path, {"steps": steps}, env={"EXPEDITOR_FAKE_LOG": str(log)})
    result = await executor.run(request, marker_dir=None, caller_session_id=None)
    assert result.termination is Termination.STALE
    (daemon,) = [entry["pid"] for entry in read_invocation_log(log) if entry["event"] == "spawned"]
    escaped = [killed for killed in result.killed if killed.pid == daemon]
    assert len(escaped) == 1
    assert escaped[0].escaped
    # The conftest guard also fails the test if the daemon is still alive.
