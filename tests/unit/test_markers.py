"""Execution markers: exact names, atomic files, heartbeat, removal on every exit path, and the bounds
a marker cannot set for itself (its times, its format, its owner)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from expeditor.errors import InvalidIdentifier
from expeditor.monitor import execution_marker, find_active_marker, parse_marker_name, write_marker
from expeditor.monitor.markers import MARKER_FORMAT_VERSION, Refusal, read_marker, remove_orphaned_markers
from expeditor.process_identity import process_start_time

pytestmark = pytest.mark.anyio

HEX = "0123456789abcdef0123456789abcdef"
# The default settings' figure: the larger of timeout and dispatch_timeout, plus kill_grace.
LONGEST_CALL = 14403


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (f"run-skill-in-progress-abc-{HEX}.marker", ("run-skill", "abc")),
        (f"run-skill-in-progress-abc-def-{HEX}.marker", ("run-skill", "abc-def")),
        (f"dispatch-in-progress-1f2e-33-{HEX}.marker", ("dispatch", "1f2e-33")),
        (f"run-skill-in-progress-abc-{HEX}.marker.tmp", None),
        (f"run-skill-in-progress-abc-{HEX[:-1]}.marker", None),
        (f"run-skill-in-progress-abc{HEX}.marker", None),
        (f"run-skill-in-progress-a-in-progress-b-{HEX}.marker", None),
        (f"run-skill-in-progress--{HEX}.marker", None),
        ("anything.marker", None),
    ],
)
def test_marker_names_split_exactly_one_way(name: str, expected: tuple[str, str] | None) -> None:
    assert parse_marker_name(name) == expected


def test_a_written_marker_is_found_for_its_session(tmp_path: Path) -> None:
    path = write_marker(tmp_path, "run-skill", "abc")
    assert parse_marker_name(path.name) == ("run-skill", "abc")
    marker = find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL)
    assert marker is not None
    assert marker.path == path
    assert marker.owner_pid == os.getpid()


def test_a_marker_of_a_longer_session_id_does_not_match(tmp_path: Path) -> None:
    write_marker(tmp_path, "run-skill", "abc-def")
    assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL) is None
    assert find_active_marker(tmp_path, "def", freshness=30, longest_call=LONGEST_CALL) is None
    assert find_active_marker(tmp_path, "abc-def", freshness=30, longest_call=LONGEST_CALL) is not None


def test_a_marker_not_touched_within_its_freshness_is_ignored(tmp_path: Path) -> None:
    path = write_marker(tmp_path, "run-skill", "abc")
    old = time.time() - 31
    os.utime(path, (old, old))
    assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL) is None


def test_a_marker_past_its_expires_at_is_ignored(tmp_path: Path) -> None:
    write_marker(tmp_path, "run-skill", "abc", expires_at=time.time() - 1)
    assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL) is None
    write_marker(tmp_path, "run-skill", "abc", expires_at=time.time() + 60)
    assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL) is not None


def test_a_marker_whose_owner_died_is_ignored(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    started = psutil.Process(dead.pid).create_time()
    assert dead.stdin is not None
    dead.stdin.close()
    dead.wait()
    write_marker(tmp_path, "run-skill", "abc", owner=(dead.pid, started))
    assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL) is None


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"[]", b'{"pid": "x"}', b'{"pid": 1, "pid_start_time": 0, "started_at": 0}', b"[" * 100_000],
)
def test_unreadable_or_foreign_marker_files_are_ignored(tmp_path: Path, content: bytes) -> None:
    (tmp_path / f"run-skill-in-progress-abc-{HEX}.marker").write_bytes(content)
    assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL) is None


def dead_process() -> tuple[int, float]:
    """The pid and start time of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    started = psutil.Process(child.pid).create_time()
    assert child.stdin is not None
    child.stdin.close()
    child.wait()
    return child.pid, started


def write_body(marker_dir: Path, changes: dict[str, Any]) -> Path:
    """A marker of session ``abc`` (owned by this process) whose body has ``changes`` applied, under a good name."""
    body: dict[str, Any] = {
        "label": "run-skill",
        "session_id": "abc",
        "pid": os.getpid(),
        "pid_start_time": process_start_time(os.getpid()),
        "started_at": time.time(),
        "expires_at": None,
    }
    body.update(changes)
    # A fresh name each time: a refused marker is logged once per file name per process.
    path = marker_dir / f"run-skill-in-progress-abc-{uuid.uuid4().hex}.marker"
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


def test_read_marker_types_every_field_of_a_written_marker(tmp_path: Path) -> None:
    before = time.time()
    path = write_marker(tmp_path, "run-skill", "abc-def", expires_at=before + 60)
    marker = read_marker(path)
    assert marker is not None
    assert (marker.path, marker.name, marker.label, marker.session_id) == (path, path.name, "run-skill", "abc-def")
    assert (marker.owner_pid, marker.owner_start_time) == (os.getpid(), psutil.Process().create_time())
    assert before <= marker.started_at <= time.time()
    assert marker.expires_at == before + 60
    assert marker.mtime == path.stat().st_mtime
    assert marker.owner_alive()


def test_read_marker_refuses_names_that_are_not_markers(tmp_path: Path) -> None:
    path = write_marker(tmp_path, "run-skill", "abc")
    renamed = path.rename(tmp_path / ".tmp-abc")
    assert read_marker(renamed) is None
    assert read_marker(tmp_path / f"run-skill-in-progress-abc-{HEX}.marker") is None


def test_a_marker_without_a_string_label_still_vouches_with_an_empty_label(tmp_path: Path) -> None:
    write_body(tmp_path, {"label": 7})
    marker = find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL)
    assert marker is not None
    assert marker.label == ""


MALFORMED_BODIES = [
    pytest.param({"pid": True}, id="pid-bool"),
    pytest.param({"pid": str(os.getpid())}, id="pid-string"),
    pytest.param({"pid": -1}, id="pid-negative"),
    pytest.param({"pid": 0}, id="pid-zero"),
    pytest.param({"pid": float(os.getpid())}, id="pid-float"),
    pytest.param({"pid_start_time": None}, id="start-time-null"),
    pytest.param({"pid_start_time": True}, id="start-time-bool"),
    pytest.param({"started_at": "now"}, id="started-at-string"),
    pytest.param({"started_at": False}, id="started-at-bool"),
    pytest.param({"expires_at": "later"}, id="expires-at-string"),
    pytest.param({"expires_at": True}, id="expires-at-bool"),
    pytest.param({"expires_at": 10**400}, id="expires-at-beyond-float"),
    pytest.param({"session_id": "abc-def"}, id="session-id-not-the-name-s"),
    pytest.param({"session_id": None}, id="session-id-missing"),
]


@pytest.mark.parametrize("changes", MALFORMED_BODIES)
def test_a_malformed_body_does_not_vouch(tmp_path: Path, changes: dict[str, Any]) -> None:
    path = write_body(tmp_path, changes)
    assert read_marker(path) is None
    assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL) is None
    assert find_active_marker(tmp_path, "abc-def", freshness=30, longest_call=LONGEST_CALL) is None


@pytest.mark.parametrize("changes", MALFORMED_BODIES)
def test_a_malformed_body_is_left_alone_by_the_orphan_sweep(tmp_path: Path, changes: dict[str, Any]) -> None:
    pid, started = dead_process()
    path = write_body(tmp_path, {"pid": pid, "pid_start_time": started} | changes)
    assert remove_orphaned_markers(tmp_path) == []
    assert path.exists()


def test_the_orphan_sweep_removes_only_markers_whose_owner_died(tmp_path: Path) -> None:
    orphan = write_marker(tmp_path, "run-skill", "abc", owner=dead_process())
    held = write_marker(tmp_path, "run-skill", "def")
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a marker", encoding="utf-8")
    assert remove_orphaned_markers(tmp_path) == [orphan.name]
    assert sorted(tmp_path.iterdir()) == sorted([held, foreign])


def test_the_orphan_sweep_of_a_missing_directory_removes_nothing(tmp_path: Path) -> None:
    assert remove_orphaned_markers(tmp_path / "nope") == []


def test_a_missing_marker_directory_means_no_marker(tmp_path: Path) -> None:
    assert find_active_marker(tmp_path / "nope", "abc", freshness=30, longest_call=LONGEST_CALL) is None


@pytest.mark.parametrize(
    ("label", "session_id"), [("run/skill", "abc"), ("run-skill", "../x"), ("x", "a-in-progress-b")]
)
def test_labels_and_ids_that_could_escape_the_directory_are_refused(
    tmp_path: Path, label: str, session_id: str
) -> None:
    with pytest.raises(InvalidIdentifier):
        write_marker(tmp_path, label, session_id)
    assert list(tmp_path.iterdir()) == []


async def test_the_context_manager_removes_its_marker_on_normal_exit(tmp_path: Path) -> None:
    async with execution_marker(tmp_path, "run-skill", "abc") as path:
        assert path is not None
        assert path.exists()
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


async def test_the_context_manager_removes_its_marker_on_an_exception(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        async with execution_marker(tmp_path, "run-skill", "abc"):
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


async def test_the_context_manager_removes_its_marker_on_cancellation(tmp_path: Path) -> None:
    entered = anyio.Event()

    async def hold() -> None:
        async with execution_marker(tmp_path, "run-skill", "abc"):
            entered.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as group:
        group.start_soon(hold)
        with anyio.fail_after(5):
            await entered.wait()
        assert len(list(tmp_path.iterdir())) == 1
        group.cancel_scope.cancel()
    assert list(tmp_path.iterdir()) == []


async def test_the_heartbeat_keeps_the_marker_fresh(tmp_path: Path) -> None:
    async with execution_marker(tmp_path, "run-skill", "abc", heartbeat_interval=0.05) as path:
        assert path is not None
        old = time.time() - 100
        os.utime(path, (old, old))
        assert find_active_marker(tmp_path, "abc", freshness=1, longest_call=LONGEST_CALL) is None
        with anyio.fail_after(5):
            while find_active_marker(tmp_path, "abc", freshness=1, longest_call=LONGEST_CALL) is None:
                await anyio.sleep(0.02)
        # Removed by someone else: the heartbeat puts it back under the same name.
        path.unlink()
        with anyio.fail_after(5):
            while not path.exists():
                await anyio.sleep(0.02)
    assert list(tmp_path.iterdir()) == []


async def test_without_a_directory_or_a_session_the_marker_is_a_no_op(tmp_path: Path) -> None:
    async with execution_marker(None, "run-skill", "abc") as first:
        assert first is None
    async with execution_marker(tmp_path, "run-skill", None) as second:
        assert second is None
    assert list(tmp_path.iterdir()) == []


class _Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def marker_warnings() -> Iterator[list[logging.LogRecord]]:
    """The warnings the marker reader logs, whatever the logging configuration of an earlier test left."""
    source, collected = logging.getLogger("expeditor.monitor.markers"), _Collected()
    source.addHandler(collected)
    try:
        yield collected.records
    finally:
        source.removeHandler(collected)


def warnings_about(records: list[logging.LogRecord], path: Path) -> list[str]:
    return [
        record.getMessage()
        for record in records
        if record.levelno == logging.WARNING and path.name in record.getMessage()
    ]


def test_a_written_marker_carries_the_format_version(tmp_path: Path) -> None:
    path = write_marker(tmp_path, "run-skill", "abc")
    assert json.loads(path.read_text(encoding="utf-8"))["version"] == MARKER_FORMAT_VERSION == 1


def test_a_marker_without_a_version_from_an_older_expeditor_still_vouches(tmp_path: Path) -> None:
    body = {
        "label": "run-skill",
        "session_id": "abc",
        "pid": os.getpid(),
        "pid_start_time": process_start_time(os.getpid()),
    }
    path = tmp_path / f"run-skill-in-progress-abc-{HEX}.marker"
    path.write_text(json.dumps({**body, "started_at": time.time(), "expires_at": None}), encoding="utf-8")
    assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL) is not None


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"version": 2}, id="version-2"),
        pytest.param({"version": "1"}, id="version-string"),
        pytest.param({"version": True}, id="version-bool"),
        pytest.param({"version": 1.0}, id="version-float"),
    ],
)
def test_a_marker_of_another_format_version_is_ignored_with_one_warning(
    tmp_path: Path, changes: dict[str, Any], marker_warnings: list[logging.LogRecord]
) -> None:
    path = write_body(tmp_path, changes)
    for _ in range(3):  # a watcher looks every poll; the log hears of it once
        assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL) is None
    (warning,) = warnings_about(marker_warnings, path)
    assert str(path) in warning
    assert "format version" in warning


@pytest.mark.parametrize("field", ["pid_start_time", "pid", "started_at", "session_id"])
def test_a_marker_missing_a_required_field_is_ignored_with_one_warning(
    tmp_path: Path, field: str, marker_warnings: list[logging.LogRecord]
) -> None:
    path = write_body(tmp_path, {"version": 1})
    body = json.loads(path.read_text(encoding="utf-8"))
    del body[field]
    path.write_text(json.dumps(body), encoding="utf-8")
    for _ in range(3):
        assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL) is None
    (warning,) = warnings_about(marker_warnings, path)
    assert f"{field} missing" in warning


def test_a_marker_touched_into_the_future_is_not_fresh(
    tmp_path: Path, marker_warnings: list[logging.LogRecord]
) -> None:
    path = write_marker(tmp_path, "run-skill", "abc")
    now = time.time()
    os.utime(path, (now + 0.5, now + 0.5))  # within the clock slack between two hosts: still fresh
    assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL, now=now) is not None
    os.utime(path, (now + 3600, now + 3600))
    for _ in range(3):
        assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL, now=now) is None
    (warning,) = warnings_about(marker_warnings, path)
    assert "ahead of this host's clock" in warning


def test_a_marker_started_in_the_future_vouches_for_nothing(tmp_path: Path) -> None:
    now = time.time()
    write_marker(tmp_path, "run-skill", "abc", started_at=now + 3600, expires_at=now + 7200)
    assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL, now=now) is None


def test_expires_at_is_honoured_only_up_to_started_at_plus_the_longest_call(tmp_path: Path) -> None:
    now = time.time()
    path = write_marker(tmp_path, "run-skill", "abc", started_at=now - 100, expires_at=now + 10**6)
    marker = read_marker(path)
    assert marker is not None
    assert marker.trusted_until(150) == now + 50
    assert marker.refusal(freshness=30, longest_call=150, now=now) is None
    assert marker.refusal(freshness=30, longest_call=99, now=now) is Refusal.EXPIRED
    assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=99, now=now) is None


def test_a_marker_without_expires_at_is_bounded_by_the_longest_call_too(tmp_path: Path) -> None:
    now = time.time()
    write_marker(tmp_path, "run-skill", "abc", started_at=now - 100)
    assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=101, now=now) is not None
    assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=99, now=now) is None


def test_a_marker_whose_owner_is_not_an_expeditor_process_is_ignored_with_one_warning(
    tmp_path: Path, marker_warnings: list[logging.LogRecord]
) -> None:
    unrelated = subprocess.Popen(["sleep", "60"])
    try:
        owner = (unrelated.pid, psutil.Process(unrelated.pid).create_time())
        path = write_marker(tmp_path, "run-skill", "abc", owner=owner, expires_at=time.time() + 60)
        marker = read_marker(path)
        assert marker is not None
        assert marker.owner_alive()
        for _ in range(3):
            assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL) is None
        # Alive, so no orphan: the sweep leaves it (and it keeps protecting nothing).
        assert remove_orphaned_markers(tmp_path) == []
    finally:
        unrelated.kill()
        unrelated.wait()
    (warning,) = warnings_about(marker_warnings, path)
    assert "not an expeditor process" in warning
    assert remove_orphaned_markers(tmp_path) == [path.name]


@pytest.mark.skipif(os.getpid() == 1, reason="this process is pid 1 here, and the reader is always trusted")
def test_a_marker_owned_by_pid_1_is_ignored_with_one_warning(
    tmp_path: Path, marker_warnings: list[logging.LogRecord]
) -> None:
    init = (1, psutil.Process(1).create_time())
    path = write_marker(tmp_path, "run-skill", "abc", owner=init, expires_at=time.time() + 3600)
    for _ in range(3):
        assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL) is None
    assert len(warnings_about(marker_warnings, path)) == 1


def test_an_ordinary_refusal_logs_nothing(tmp_path: Path, marker_warnings: list[logging.LogRecord]) -> None:
    stale = write_marker(tmp_path, "run-skill", "abc")
    old = time.time() - 31
    os.utime(stale, (old, old))
    orphan = write_marker(tmp_path, "run-skill", "abc", owner=dead_process())
    expired = write_marker(tmp_path, "run-skill", "abc", expires_at=time.time() - 1)
    assert find_active_marker(tmp_path, "abc", freshness=30, longest_call=LONGEST_CALL) is None
    for path in (stale, orphan, expired):
        assert warnings_about(marker_warnings, path) == []
