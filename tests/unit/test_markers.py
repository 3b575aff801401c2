"""Execution markers: exact names, atomic files, heartbeat, removal on every exit path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from expeditor.errors import InvalidIdentifier
from expeditor.monitor import execution_marker, find_active_marker, parse_marker_name, write_marker
from expeditor.monitor.markers import read_marker, remove_orphaned_markers
from expeditor.process_identity import process_start_time

pytestmark = pytest.mark.anyio

HEX = "0123456789abcdef0123456789abcdef"


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
    marker = find_active_marker(tmp_path, "abc", freshness=30)
    assert marker is not None
    assert marker.path == path
    assert marker.owner_pid == os.getpid()


def test_a_marker_of_a_longer_session_id_does_not_match(tmp_path: Path) -> None:
    write_marker(tmp_path, "run-skill", "abc-def")
    assert find_active_marker(tmp_path, "abc", freshness=30) is None
    assert find_active_marker(tmp_path, "def", freshness=30) is None
    assert find_active_marker(tmp_path, "abc-def", freshness=30) is not None


def test_a_marker_not_touched_within_its_freshness_is_ignored(tmp_path: Path) -> None:
    path = write_marker(tmp_path, "run-skill", "abc")
    old = time.time() - 31
    os.utime(path, (old, old))
    assert find_active_marker(tmp_path, "abc", freshness=30) is None


def test_a_marker_past_its_expires_at_is_ignored(tmp_path: Path) -> None:
    write_marker(tmp_path, "run-skill", "abc", expires_at=time.time() - 1)
    assert find_active_marker(tmp_path, "abc", freshness=30) is None
    write_marker(tmp_path, "run-skill", "abc", expires_at=time.time() + 60)
    assert find_active_marker(tmp_path, "abc", freshness=30) is not None


def test_a_marker_whose_owner_died_is_ignored(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    started = psutil.Process(dead.pid).create_time()
    assert dead.stdin is not None
    dead.stdin.close()
    dead.wait()
    write_marker(tmp_path, "run-skill", "abc", owner=(dead.pid, started))
    assert find_active_marker(tmp_path, "abc", freshness=30) is None


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"[]", b'{"pid": "x"}', b'{"pid": 1, "pid_start_time": 0, "started_at": 0}', b"[" * 100_000],
)
def test_unreadable_or_foreign_marker_files_are_ignored(tmp_path: Path, content: bytes) -> None:
    (tmp_path / f"run-skill-in-progress-abc-{HEX}.marker").write_bytes(content)
    assert find_active_marker(tmp_path, "abc", freshness=30) is None


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
    path = marker_dir / f"run-skill-in-progress-abc-{HEX}.marker"
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
    marker = find_active_marker(tmp_path, "abc", freshness=30)
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
    assert find_active_marker(tmp_path, "abc", freshness=30) is None
    assert find_active_marker(tmp_path, "abc-def", freshness=30) is None


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
    assert find_active_marker(tmp_path / "nope", "abc", freshness=30) is None


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
        assert find_active_marker(tmp_path, "abc", freshness=1) is None
        with anyio.fail_after(5):
            while find_active_marker(tmp_path, "abc", freshness=1) is None:
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
