"""Execution markers: files that say "the session that called me is blocked on my work, not stuck".

Name: ``{label}-in-progress-{session_id}-{32 hex}.marker`` in a shared directory. Labels and
session ids may contain ``-`` but never ``in-progress``, so every name splits exactly one way,
and a lookup for session ``abc`` never matches a marker of session ``abc-def``.

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

import anyio

from expeditor.ids import RESERVED_INFIX, validate_identifier
from expeditor.process_identity import process_alive, process_start_time

__all__ = [
    "ActiveMarker",
    "execution_marker",
    "find_active_marker",
    "parse_marker_name",
    "remove_orphaned_markers",
    "touch_marker",
    "write_marker",
]

_SUFFIX = ".marker"
_INFIX = f"-{RESERVED_INFIX}-"
_HEX32 = re.compile(r"[0-9a-f]{32}")
_IDENTIFIER = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class ActiveMarker:
    """A marker that currently vouches for a session."""

    path: Path
    label: str
    session_id: str
    owner_pid: int
    started_at: float
    expires_at: float | None

    @property
    def name(self) -> str:
        return self.path.name


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


def _read_active(path: Path, session_id: str, freshness: float, now: float) -> ActiveMarker | None:
    try:
        mtime = path.stat().st_mtime
        if now - mtime > freshness:
            return None
        body = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    pid, start, started = body.get("pid"), body.get("pid_start_time"), body.get("started_at")  # pyright: ignore[reportUnknownVariableType, reportUnknownMemberType]
    expires_at = body.get("expires_at")  # pyright: ignore[reportUnknownVariableType, reportUnknownMemberType]
    if not isinstance(pid, int) or not isinstance(start, int | float) or not isinstance(started, int | float):
        return None
    if expires_at is not None and (not isinstance(expires_at, int | float) or now > expires_at):
        return None
    if body.get("session_id") != session_id or not process_alive(pid, float(start)):  # pyright: ignore[reportUnknownMemberType]
        return None
    label = body.get("label")  # pyright: ignore[reportUnknownVariableType, reportUnknownMemberType]
    return ActiveMarker(
        path=path,
        label=label if isinstance(label, str) else "",
        session_id=session_id,
        owner_pid=pid,
        started_at=float(started),
        expires_at=None if expires_at is None else float(expires_at),
    )


def remove_orphaned_markers(marker_dir: Path) -> list[str]:
    """Delete the markers whose owner process is gone (a holder killed with SIGKILL); returns their names.

    Such a marker never vouches again (its owner is checked on every read), but it would sit in the
    directory and in ``status`` forever. Files that are not markers, or cannot be read, are left alone.
    """
    removed: list[str] = []
    try:
        entries = list(os.scandir(marker_dir))
    except OSError:
        return removed
    for entry in entries:
        if parse_marker_name(entry.name) is None:
            continue
        try:
            body = json.loads(Path(entry.path).read_bytes())
        except (OSError, ValueError):
            continue
        pid, start = (body.get("pid"), body.get("pid_start_time")) if isinstance(body, dict) else (None, None)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        if not isinstance(pid, int) or not isinstance(start, int | float) or process_alive(pid, float(start)):
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
        parsed = parse_marker_name(entry.name)
        if parsed is None or parsed[1] != session_id:
            continue
        marker = _read_active(Path(entry.path), session_id, freshness, now)
        if marker is None:
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
