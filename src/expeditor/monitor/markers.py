"""Execution markers: files that say "the session that called me is blocked on my work, not stuck".

Name: ``{label}-in-progress-{session_id}-{32 hex}.marker`` in a shared directory. Labels and
session ids may contain ``-`` but never ``in-progress``, so every name splits exactly one way,
and a lookup for session ``abc`` never matches a marker of session ``abc-def``.

Every reader goes through ``read_marker``, which turns a file into a typed ``MarkerFile`` or None.
A marker is active while all of these hold: its name parses and names the session, its mtime
is within ``freshness`` (the holder touches it every heartbeat), its owner process is alive
with the start time recorded in it, and its ``expires_at`` (when set) has not passed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import anyio

from expeditor.ids import RESERVED_INFIX, validate_identifier
from expeditor.process_identity import process_alive, process_start_time

__all__ = [
    "ActiveMarker",
    "MarkerFile",
    "execution_marker",
    "find_active_marker",
    "parse_marker_name",
    "read_marker",
    "remove_orphaned_markers",
    "touch_marker",
    "write_marker",
]

_SUFFIX = ".marker"
_INFIX = f"-{RESERVED_INFIX}-"
_HEX32 = re.compile(r"[0-9a-f]{32}")
_IDENTIFIER = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class MarkerFile:
    """One marker file as ``read_marker`` found it: its name parsed, its body typed.

    Whether it vouches is asked with ``vouches`` at a given moment: the file itself does not change
    when its owner dies or its time runs out.
    """

    path: Path
    label: str
    session_id: str
    owner_pid: int
    owner_start_time: float
    started_at: float
    expires_at: float | None
    mtime: float

    @property
    def name(self) -> str:
        return self.path.name

    def owner_alive(self) -> bool:
        """True while the process that wrote the marker (same pid, same start time) runs."""
        return process_alive(self.owner_pid, self.owner_start_time)

    def vouches(self, *, freshness: float, now: float) -> bool:
        """Touched within ``freshness`` of ``now`` (epoch seconds), not past ``expires_at``, owner alive."""
        if now - self.mtime > freshness:
            return False
        if self.expires_at is not None and now > self.expires_at:
            return False
        return self.owner_alive()


ActiveMarker = MarkerFile
"""A marker file that vouched for its session when ``find_active_marker`` read it."""


def parse_marker_name(name: str) -> tuple[str, str] | None:
    """``(label, session_id)`` of a well-formed marker file name, else None."""
    if not name.endswith(_SUFFIX) or name.count(_INFIX) != 1:
        return None
    label, rest = name[: -len(_SUFFIX)].split(_INFIX)
    session_id, dash, token = rest[:-33], rest[-33:-32], rest[-32:]
    if dash != "-" or not _HEX32.fullmatch(token):
        return None
    if not _IDENTIFIER.fullmatch(label) or not _IDENTIFIER.fullmatch(session_id):
        return None
    return label, session_id


def write_marker(
    marker_dir: Path,
    label: str,
    session_id: str,
    *,
    expires_at: float | None = None,
    owner: tuple[int, float] | None = None,
) -> Path:
    """Create a marker atomically (write a hidden temporary file, then rename) and return its path.

    ``owner`` (pid, start time) defaults to this process.
    """
    validate_identifier(label, what="marker label")
    validate_identifier(session_id)
    marker_dir.mkdir(parents=True, exist_ok=True)
    pid, start_time = owner if owner is not None else (os.getpid(), process_start_time(os.getpid()))
    body = {
        "label": label,
        "session_id": session_id,
        "pid": pid,
        "pid_start_time": start_time,
        "started_at": time.time(),
        "expires_at": expires_at,
    }
    path = marker_dir / f"{label}{_INFIX}{session_id}-{uuid.uuid4().hex}{_SUFFIX}"
    descriptor, temporary = tempfile.mkstemp(dir=marker_dir, prefix=".tmp-")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            json.dump(body, stream)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def touch_marker(path: Path) -> bool:
    """Refresh the marker's mtime; False when it is gone."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


def read_marker(path: Path) -> MarkerFile | None:
    """The marker file at ``path``, or None when it is not a readable, well-formed marker.

    None for a name that does not parse, a file that is gone or cannot be read, and a body that is
    not a marker's (half-written, foreign): not a JSON object, its ``session_id`` not the one in its
    name, its ``pid`` not a positive integer, ``pid_start_time`` or ``started_at`` not a number,
    ``expires_at`` neither a number nor null. Booleans are not numbers here. A ``label`` that is not
    a string reads as "".
    """
    parsed = parse_marker_name(path.name)
    if parsed is None:
        return None
    try:
        mtime = path.stat().st_mtime
        loaded: object = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(loaded, dict):
        return None
    body = cast("dict[str, object]", loaded)
    pid, label = body.get("pid"), body.get("label")
    owner_start_time, started_at = _number(body.get("pid_start_time")), _number(body.get("started_at"))
    raw_expiry = body.get("expires_at")
    expires_at = None if raw_expiry is None else _number(raw_expiry)
    if body.get("session_id") != parsed[1] or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    if owner_start_time is None or started_at is None or (raw_expiry is not None and expires_at is None):
        return None
    return MarkerFile(
        path=path,
        label=label if isinstance(label, str) else "",
        session_id=parsed[1],
        owner_pid=pid,
        owner_start_time=owner_start_time,
        started_at=started_at,
        expires_at=expires_at,
        mtime=mtime,
    )


def _number(value: object) -> float | None:
    """A JSON number as a float; None for anything else, including booleans and integers too large for a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def remove_orphaned_markers(marker_dir: Path) -> list[str]:
    """Delete the markers whose owner process is gone (a holder killed with SIGKILL); returns their names.

    Such a marker never vouches again (its owner is checked on every read), but it would sit in the
    directory and in ``status`` forever. Files ``read_marker`` refuses (not markers, unreadable, malformed)
    are left alone.
    """
    removed: list[str] = []
    try:
        entries = list(os.scandir(marker_dir))
    except OSError:
        return removed
    for entry in entries:
        marker = read_marker(Path(entry.path))
        if marker is None or marker.owner_alive():
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed.append(entry.name)
    return removed


def find_active_marker(
    marker_dir: Path, session_id: str, *, freshness: float, now: float | None = None
) -> ActiveMarker | None:
    """The active marker for exactly ``session_id`` that vouches longest, or None.

    Unreadable, half-written and foreign files are skipped; a missing directory means no marker.
    """
    now = time.time() if now is None else now
    needle = f"{_INFIX}{session_id}-"
    best: ActiveMarker | None = None
    try:
        entries = list(os.scandir(marker_dir))
    except OSError:
        return None
    for entry in entries:
        if needle not in entry.name:
            continue
        marker = read_marker(Path(entry.path))
        if marker is None or marker.session_id != session_id or not marker.vouches(freshness=freshness, now=now):
            continue
        if best is None or (best.expires_at is not None and (marker.expires_at or float("inf")) > best.expires_at):
            best = marker
    return best


@contextlib.asynccontextmanager
async def execution_marker(
    marker_dir: Path | None,
    label: str,
    session_id: str | None,
    *,
    expires_at: float | None = None,
    heartbeat_interval: float = 10.0,
) -> AsyncGenerator[Path | None]:
    """Hold a marker for ``session_id`` while the body runs; touched every ``heartbeat_interval``.

    A no-op (yields None) when ``marker_dir`` or ``session_id`` is None. The file is removed on
    every exit path, cancellation included.
    """
    if marker_dir is None or session_id is None:
        yield None
        return
    path = write_marker(marker_dir, label, session_id, expires_at=expires_at)
    body_error: BaseException | None = None
    try:
        async with anyio.create_task_group() as heartbeat:
            heartbeat.start_soon(_heartbeat, path, marker_dir, label, session_id, expires_at, heartbeat_interval)
            try:
                yield path
            except BaseException as exc:
                # Re-raised below, outside the task group, so the caller sees its own exception
                # rather than an ExceptionGroup wrapping it.
                body_error = exc
            heartbeat.cancel_scope.cancel()
        if body_error is not None:
            raise body_error
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def _heartbeat(
    path: Path, marker_dir: Path, label: str, session_id: str, expires_at: float | None, interval: float
) -> None:
    while True:
        await anyio.sleep(interval)
        if not touch_marker(path):
            # Someone cleaned the directory under us: put the same name back, so exit still removes it.
            replacement = write_marker(marker_dir, label, session_id, expires_at=expires_at)
            with contextlib.suppress(OSError):
                os.replace(replacement, path)
