"""Execution markers: files that say "the session that called me is blocked on my work, not stuck".

Name: ``{label}-in-progress-{session_id}-{32 hex}.marker`` in a shared directory. Labels and
session ids may contain ``-`` but never ``in-progress``, so every name splits exactly one way,
and a lookup for session ``abc`` never matches a marker of session ``abc-def``.

The body is a public, versioned JSON format (``"version": 1``, described in the README's "Execution
marker format"). Every reader goes through ``read_marker``, which turns a file into a typed
``MarkerFile`` or None. A marker vouches only within bounds it cannot set for itself: while its name
parses and names the session, its mtime is within ``freshness`` (the holder touches it every
heartbeat) and not in the future, its ``started_at`` is not in the future, neither its ``expires_at``
(when set) nor ``started_at`` + the longest call expeditor allows has passed, and its owner process is
alive with the start time recorded in it *and* is an expeditor process. A marker refused for its
body or as a forgery (a future time, a foreign owner) is logged once per file name per process.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, cast

import anyio

from expeditor.homes import make_private_dir
from expeditor.ids import RESERVED_INFIX, validate_identifier
from expeditor.process_identity import process_alive, process_start_time, runs_expeditor

__all__ = [
    "MARKER_FORMAT_VERSION",
    "ActiveMarker",
    "MarkerFile",
    "Refusal",
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

MARKER_FORMAT_VERSION = 1
"""The body format ``write_marker`` writes; readers take this one and, from older expeditors, none."""

# How far ahead of the reader's clock a holder's may run before its times read as forged: hosts
# sharing a marker directory (or one host across a clock step) rarely disagree by more.
DEFAULT_CLOCK_SLACK = 1.0

logger = logging.getLogger(__name__)
_warned_names: set[str] = set()


def _warn_once(path: Path, why: str) -> None:
    """One warning per marker file name per process: a watcher looks every poll, the log must not."""
    if path.name in _warned_names:
        return
    _warned_names.add(path.name)
    logger.warning("ignoring execution marker %s: %s", path, why)


class Refusal(enum.Enum):
    """Why a well-formed marker does not vouch at a given moment."""

    FROM_THE_FUTURE = "its mtime or started_at is ahead of this host's clock"
    STALE = "it was not touched within marker_freshness"
    EXPIRED = "its expires_at, or started_at plus the longest call expeditor allows, has passed"
    OWNER_GONE = "the process that wrote it is gone"
    FOREIGN_OWNER = "its owner process is not an expeditor process"

    @property
    def is_forgery(self) -> bool:
        """Refusals an honest holder never earns (a dead owner or an old file are ordinary): logged once."""
        return self in (Refusal.FROM_THE_FUTURE, Refusal.FOREIGN_OWNER)


@dataclass(frozen=True)
class MarkerFile:
    """One marker file as ``read_marker`` found it: its name parsed, its body typed.

    Whether it vouches is asked with ``refusal`` at a given moment: the file itself does not change
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

    def trusted_until(self, longest_call: float) -> float:
        """Its ``expires_at``, but never past ``started_at`` + ``longest_call``: a marker cannot outlast any call."""
        bound = self.started_at + longest_call
        return bound if self.expires_at is None else min(self.expires_at, bound)

    def refusal(
        self, *, freshness: float, longest_call: float, now: float, clock_slack: float = DEFAULT_CLOCK_SLACK
    ) -> Refusal | None:
        """Why the marker does not vouch at ``now`` (epoch seconds), or None when it does.

        Cheap checks come first: the owner's process is only looked at for a marker that is otherwise good.
        """
        if self.mtime > now + clock_slack or self.started_at > now + clock_slack:
            return Refusal.FROM_THE_FUTURE
        if now - self.mtime > freshness:
            return Refusal.STALE
        if now > self.trusted_until(longest_call):
            return Refusal.EXPIRED
        if not self.owner_alive():
            return Refusal.OWNER_GONE
        if not runs_expeditor(self.owner_pid):
            return Refusal.FOREIGN_OWNER
        return None


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
    started_at: float | None = None,
) -> Path:
    """Create a marker atomically (write a hidden temporary file, then rename) and return its path.

    ``owner`` (pid, start time) defaults to this process, ``started_at`` to now.
    """
    validate_identifier(label, what="marker label")
    validate_identifier(session_id)
    make_private_dir(marker_dir)
    pid, start_time = owner if owner is not None else (os.getpid(), process_start_time(os.getpid()))
    body = {
        "version": MARKER_FORMAT_VERSION,
        "label": label,
        "session_id": session_id,
        "pid": pid,
        "pid_start_time": start_time,
        "started_at": time.time() if started_at is None else started_at,
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

    None, silently, for a name that does not parse and a file that is gone or cannot be read. None, with
    one warning naming the file, for a marker-named file whose body is not a version 1 marker: not a
    JSON object, a ``version`` other than 1 (none is taken as an older expeditor's), its ``session_id``
    not the one in its name, its ``pid`` not a positive integer, ``pid_start_time`` or ``started_at``
    missing or not a number, ``expires_at`` neither a number nor null. Booleans are not numbers here. A
    ``label`` that is not a string reads as "".
    """
    parsed = parse_marker_name(path.name)
    if parsed is None:
        return None
    try:
        mtime = path.stat().st_mtime
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        loaded: object = json.loads(raw)
    except (ValueError, RecursionError):
        _warn_once(path, "its body is not JSON")
        return None
    if not isinstance(loaded, dict):
        _warn_once(path, "its body is not a JSON object")
        return None
    typed = _typed_body(cast("dict[str, object]", loaded), parsed[1])
    if isinstance(typed, str):
        _warn_once(path, typed)
        return None
    return MarkerFile(
        path=path,
        label=typed.label,
        session_id=parsed[1],
        owner_pid=typed.pid,
        owner_start_time=typed.pid_start_time,
        started_at=typed.started_at,
        expires_at=typed.expires_at,
        mtime=mtime,
    )


class _Body(NamedTuple):
    label: str
    pid: int
    pid_start_time: float
    started_at: float
    expires_at: float | None


def _typed_body(body: dict[str, object], session_id: str) -> _Body | str:
    """The fields of a version 1 marker of ``session_id``, or the sentence saying why ``body`` is not one."""
    version = body.get("version")
    if version is not None and (type(version) is not int or version != MARKER_FORMAT_VERSION):
        return f"its format version {version!r} is not one this expeditor reads ({MARKER_FORMAT_VERSION})"
    missing = [name for name in ("session_id", "pid", "pid_start_time", "started_at") if name not in body]
    if missing:
        return f"required field{'s' if len(missing) > 1 else ''} {', '.join(missing)} missing"
    if body["session_id"] != session_id:
        return f"its session_id {body['session_id']!r} is not the one in its name"
    pid, pid_start_time, started_at = body["pid"], _number(body["pid_start_time"]), _number(body["started_at"])
    if type(pid) is not int or pid <= 0:
        return f"its pid {pid!r} is not a positive integer"
    if pid_start_time is None:
        return f"its pid_start_time {body['pid_start_time']!r} is not a number"
    if started_at is None:
        return f"its started_at {body['started_at']!r} is not a number"
    raw_expiry = body.get("expires_at")
    expires_at = None if raw_expiry is None else _number(raw_expiry)
    if raw_expiry is not None and expires_at is None:
        return f"its expires_at {raw_expiry!r} is neither a number nor null"
    label = body.get("label")
    return _Body(label if isinstance(label, str) else "", pid, pid_start_time, started_at, expires_at)


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
    marker_dir: Path,
    session_id: str,
    *,
    freshness: float,
    longest_call: float,
    now: float | None = None,
    clock_slack: float = DEFAULT_CLOCK_SLACK,
) -> ActiveMarker | None:
    """The active marker for exactly ``session_id`` that vouches longest, or None.

    ``longest_call`` is the longest call expeditor allows, kill grace included: no marker vouches past
    its ``started_at`` plus that. Unreadable, malformed and foreign files are skipped; a missing
    directory means no marker. A marker refused as a forgery is logged once (see ``Refusal``).
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
        if marker is None or marker.session_id != session_id:
            continue
        refusal = marker.refusal(freshness=freshness, longest_call=longest_call, now=now, clock_slack=clock_slack)
        if refusal is not None:
            if refusal.is_forgery:
                _warn_once(marker.path, refusal.value)
            continue
        if best is None or _vouches_longer(marker, best, longest_call):
            best = marker
    return best


def _vouches_longer(marker: MarkerFile, other: MarkerFile, longest_call: float) -> bool:
    """A marker without ``expires_at`` (bounded by the caller's max_suppression_seconds) ranks above any with one."""
    if other.expires_at is None:
        return False
    return marker.expires_at is None or marker.trusted_until(longest_call) > other.trusted_until(longest_call)


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
    # A marker put back by the heartbeat keeps the first one's started_at: its call began then.
    rewrite = functools.partial(
        write_marker, marker_dir, label, session_id, expires_at=expires_at, started_at=time.time()
    )
    path = rewrite()
    body_error: BaseException | None = None
    try:
        async with anyio.create_task_group() as heartbeat:
            heartbeat.start_soon(_heartbeat, path, rewrite, heartbeat_interval)
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


async def _heartbeat(path: Path, rewrite: Callable[[], Path], interval: float) -> None:
    while True:
        await anyio.sleep(interval)
        if not touch_marker(path):
            # Someone cleaned the directory under us: put the same name back, so exit still removes it.
            replacement = rewrite()
            with contextlib.suppress(OSError):
                os.replace(replacement, path)
