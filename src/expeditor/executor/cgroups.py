"""cgroup v2 primitives: find, create, join, watch, kill and remove control groups.

A process cannot leave its control group on its own, so a group per session holds everything the
session started, whatever its processes do to their session, process group, parent or environment;
one write to ``cgroup.kill`` ends all of it. The module is imported by the server's keeper
(``python -I -S session_guard.py --keeper``), so it uses the standard library only and keeps its import
cheap: no ``typing``, ``dataclasses`` or ``re`` (5-11 ms each, measured), and ``pathlib``
only where a ``Path`` is returned.

Layout, under a parent group this process may write to (normally its own group)::

    <parent>/expeditor-<owner pid>-<owner start>/   one per server (``open_server_group``)
        session-<session id>/                       one per session (``create_session_group``)

Errors: reading a group that no longer exists reads as empty (a removed group holds nothing);
anything else the kernel refuses raises ``CgroupUnavailable`` saying what and why, ``from``
the ``OSError``; ``join`` of a process that is gone raises ``ProcessLookupError``.
"""

from __future__ import annotations

import errno
import math
import os
import select
import time

TYPE_CHECKING = False  # the typing module costs ~8 ms to import in the keeper; type checkers read this name
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import TypeAlias

    StrPath: TypeAlias = "str | os.PathLike[str]"

__all__ = [
    "SERVER_GROUP_PREFIX",
    "SESSION_GROUP_PREFIX",
    "CgroupUnavailable",
    "cpu_seconds",
    "create_session_group",
    "dead_server_groups",
    "join",
    "kill",
    "members",
    "open_server_group",
    "own_group",
    "parse_server_group_name",
    "populated",
    "reap_server_group",
    "remove",
    "server_group_name",
    "v2_root",
    "wait_empty",
]

SERVER_GROUP_PREFIX = "expeditor-"
SESSION_GROUP_PREFIX = "session-"
_SESSION_ID_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_GONE = (errno.ENOENT, errno.ENODEV)  # ENODEV: reading through a file of a group removed meanwhile


class CgroupUnavailable(Exception):
    """A control group cannot be created or used here; the message says which and why."""


def _as_path(path: str) -> Path:
    """A ``Path``, importing pathlib only when a caller asks for one (the keeper never does)."""
    from pathlib import Path

    return Path(path)


def _refused(action: str, path: str, exc: OSError) -> CgroupUnavailable:
    return CgroupUnavailable(f"cannot {action} {path}: {exc.strerror or exc}")


def _read(path: str) -> bytes | None:
    """A cgroup file's contents, or None when its group is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise _refused("read", path, exc) from exc
    try:
        return os.read(fd, 65536)
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise _refused("read", path, exc) from exc
    finally:
        os.close(fd)


def _write(path: str, data: bytes) -> None:
    """One ``write(2)`` to a cgroup file: the kernel acts on each write, and reports its refusal there."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# --- where the hierarchy is ---------------------------------------------------------------------


def _unescape(field: str) -> str:
    r"""A mountinfo path field with its octal escapes (``\040`` for a space) decoded."""
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and all(digit in "01234567" for digit in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _v2_mounts() -> list[tuple[str, str]]:
    """``(root inside the file system, mount point)`` of every cgroup2 mount this process sees."""
    data = _read("/proc/self/mountinfo")
    mounts: list[tuple[str, str]] = []
    for line in (data or b"").decode(errors="replace").splitlines():
        head, separator, tail = line.partition(" - ")
        fields = head.split()
        if separator and len(fields) >= 5 and tail.split(" ", 1)[0] == "cgroup2":
            mounts.append((_unescape(fields[3]), _unescape(fields[4])))
    return mounts


def v2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup``, or ``.../unified`` beside v1), or None.

    Read from ``/proc/self/mountinfo`` because the place differs between distributions and containers.
    A mount of the whole hierarchy is preferred over a bind mount of a sub-tree.
    """
    mounts = _v2_mounts()
    if not mounts:
        return None
    whole = [point for root, point in mounts if root == "/"]
    return _as_path(whole[0] if whole else mounts[0][1])


def own_group(pid: int | str = "self") -> Path | None:
    """The directory of a process's cgroup v2 group: the mount point joined with its ``0::`` line.

    None when there is no v2 mount, the process is gone, or its group lies outside every mount
    this process sees (another cgroup namespace).
    """
    data = _read(f"/proc/{pid}/cgroup")
    group = next((line[3:] for line in (data or b"").decode().splitlines() if line.startswith("0::")), None)
    if group is None or not group.startswith("/") or "/../" in f"{group}/":
        return None
    for root, point in sorted(_v2_mounts(), key=lambda mount: -len(mount[0])):
        if root == "/":
            return _as_path(point + group.rstrip("/"))
        if group == root or group.startswith(root + "/"):
            return _as_path(point + group[len(root) :])
    return None


# --- naming a server's group --------------------------------------------------------------------


def server_group_name(owner_pid: int, owner_start: float) -> str:
    """``expeditor-<pid>-<start>``: the owning server's identity, so a later process can tell from the name
    alone whether the owner is still alive.

    ``owner_start`` is the owner's start time as ``psutil.Process(pid).create_time()`` gives it,
    written as ``repr(float)``, the shortest text that reads back as the same float:
    ``parse_server_group_name`` returns exactly the pair given here. To decide whether the owner
    lives, compare that pair with a fresh reading of the pid's start time. psutil computes it from
    ``/proc/stat``'s whole-second ``btime`` plus the start in clock ticks, so a fresh reading is
    bit-identical unless the wall clock was stepped since boot, which shifts ``btime`` by whole
    seconds: compare with ``abs(fresh - start) <= 1.0`` to survive a small step (a pid is not
    reused within a second), or with ``==`` to be strict.
    """
    if owner_pid <= 0:
        raise ValueError(f"a server group needs a positive pid, not {owner_pid}")
    start = float(owner_start)
    if not math.isfinite(start) or start < 0:
        raise ValueError(f"a server group needs a finite, non-negative start time, not {owner_start!r}")
    return f"{SERVER_GROUP_PREFIX}{owner_pid}-{start!r}"


def parse_server_group_name(name: str) -> tuple[int, float] | None:
    """``(owner pid, owner start)`` from a name ``server_group_name`` wrote, or None for any other name."""
    if not name.startswith(SERVER_GROUP_PREFIX):
        return None
    pid_text, _, start_text = name[len(SERVER_GROUP_PREFIX) :].partition("-")
    if not (pid_text.isascii() and pid_text.isdigit()):
        return None
    try:
        pid, start = int(pid_text), float(start_text)
        canonical = server_group_name(pid, start)
    except ValueError:
        return None
    # Only the exact spelling counts ("007", "1_0", " 5.0" read as numbers but were not written here).
    return (pid, start) if canonical == name else None


# --- creating and joining -----------------------------------------------------------------------


def open_server_group(parent: StrPath, owner_pid: int, owner_start: float) -> Path:
    """Create (or reuse) this server's group under ``parent`` and check that it can contain sessions.

    Checked before any session relies on it: ``parent`` is a v2 group, the kernel has
    ``cgroup.kill`` (Linux >= 5.14), and ``cgroup.procs`` is writable both in the new group and in
    ``parent`` (moving a process needs write access to the common ancestor of its old and new
    group; always true for root, the delegation's ownership otherwise). On failure, a group this
    call created is removed and ``CgroupUnavailable`` says why.
    """
    parent_path = os.fspath(parent)
    if not os.path.exists(os.path.join(parent_path, "cgroup.controllers")):
        raise CgroupUnavailable(f"{parent_path} is not a cgroup v2 group")
    group = os.path.join(parent_path, server_group_name(owner_pid, owner_start))
    try:
        os.mkdir(group)
        created = True
    except FileExistsError:
        created = False
    except OSError as exc:
        raise _refused("create a control group in", parent_path, exc) from exc
    problem = None
    if not os.path.exists(os.path.join(group, "cgroup.kill")):
        problem = f"the kernel has no cgroup.kill (Linux < 5.14) in {group}"
    elif not os.access(os.path.join(group, "cgroup.procs"), os.W_OK):
        problem = f"cannot move processes into {group}: its cgroup.procs is not writable"
    elif not os.access(os.path.join(parent_path, "cgroup.procs"), os.W_OK):
        problem = f"cannot move processes out of {parent_path}: its cgroup.procs is not writable"
    if problem is not None:
        if created:
            remove(group)
        raise CgroupUnavailable(problem)
    return _as_path(group)


def create_session_group(server_group: StrPath, session_id: str) -> Path:
    """Create ``session-<id>`` under the server's group, before the session's first process exists.

    An existing empty group of that name is reused (a retried launch); one still holding processes
    is refused, so a new run never shares a group, and a kill, with something left from an old one.
    """
    if not session_id or not _SESSION_ID_CHARACTERS.issuperset(session_id):
        raise ValueError(f"a session id is letters, digits, '_' and '-', not {session_id!r}")
    group = os.path.join(os.fspath(server_group), SESSION_GROUP_PREFIX + session_id)
    try:
        os.mkdir(group)
    except FileExistsError:
        if populated(group):
            raise CgroupUnavailable(f"{group} already exists and still holds processes") from None
    except OSError as exc:
        raise _refused("create a control group in", os.fspath(server_group), exc) from exc
    return _as_path(group)


def join(group: StrPath, pid: int = 0) -> None:
    """Move process ``pid`` (0: the calling process) into ``group``; its future children are born there.

    Raises ``ProcessLookupError`` when the process is gone, ``CgroupUnavailable`` when the kernel refuses.
    """
    path = os.path.join(os.fspath(group), "cgroup.procs")
    try:
        _write(path, str(pid).encode())
    except ProcessLookupError:
        raise
    except OSError as exc:
        raise _refused(f"move process {pid or os.getpid()} into", os.fspath(group), exc) from exc


# --- watching -----------------------------------------------------------------------------------


def _groups_below(group: str) -> list[str]:
    """``group`` and every group under it, parents before children."""
    found = [group]
    for path in found:  # grows while iterating: a breadth-first walk
        try:
            with os.scandir(path) as entries:
                found.extend(entry.path for entry in entries if entry.is_dir(follow_symlinks=False))
        except OSError as exc:
            if exc.errno not in (*_GONE, errno.ENOTDIR):
                raise _refused("list", path, exc) from exc
    return found


def members(group: StrPath) -> list[int]:
    """Pids of the processes in ``group`` and in every group below it (empty when the group is gone).

    Read before a kill to report what was killed: after it the kernel lists nothing, not even
    zombies waiting for their parent.
    """
    pids: list[int] = []
    for path in _groups_below(os.fspath(group)):
        pids.extend(int(pid) for pid in (_read(os.path.join(path, "cgroup.procs")) or b"").split())
    return pids


def _populated_in(events: bytes | None) -> bool:
    for line in (events or b"").splitlines():
        if line.startswith(b"populated "):
            return line.split()[1] != b"0"
    return False


def populated(group: StrPath) -> bool:
    """True while ``group`` or a group below it holds a live process; a missing group holds nothing.

    Read from ``cgroup.events``, which the kernel updates as soon as the last process exits (not when
    it is reaped). Not meaningful for the root group, which has no ``cgroup.events``.
    """
    return _populated_in(_read(os.path.join(os.fspath(group), "cgroup.events")))


def wait_empty(group: StrPath, timeout: float, *, poll: float = 0.001, max_poll: float = 0.01) -> bool:
    """Block until ``group`` holds no live process, at most ``timeout`` seconds; True when it is empty.

    Waits on ``cgroup.events`` with ``poll(2)`` (the kernel signals every change of the file) and
    re-reads it after ``poll`` seconds at the latest, doubling up to ``max_poll``: the kernel
    rate-limits that signal to one per 10 ms per file (observed: 13-20 ms late right after processes
    joined), and the file itself is current at once. Blocking: call it from a worker thread in async code.
    """
    deadline = time.monotonic() + timeout
    path = os.path.join(os.fspath(group), "cgroup.events")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in _GONE:
            return True
        raise _refused("read", path, exc) from exc
    try:
        waiter = select.poll()
        waiter.register(fd, select.POLLPRI | select.POLLERR)
        interval = poll
        while True:
            try:
                events = os.pread(fd, 4096, 0)
            except OSError as exc:
                if exc.errno in _GONE:
                    return True
                raise _refused("read", path, exc) from exc
            if not _populated_in(events):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            waiter.poll(min(interval, remaining) * 1000)
            interval = min(interval * 2, max_poll)
    finally:
        os.close(fd)


def cpu_seconds(group: StrPath) -> float | None:
    """CPU time used by every process that ever ran in ``group`` and below (``usage_usec`` of ``cpu.stat``).

    The kernel keeps it without the cpu controller, so one read replaces a walk of the process
    table. None when the group is gone or the file cannot be read.
    """
    try:
        data = _read(os.path.join(os.fspath(group), "cpu.stat"))
    except CgroupUnavailable:
        return None
    for line in (data or b"").splitlines():
        if line.startswith(b"usage_usec "):
            return int(line.split()[1]) / 1e6
    return None


# --- ending -------------------------------------------------------------------------------------


def kill(group: StrPath) -> None:
    """SIGKILL every process in ``group`` and the groups below it, including those forking right now.

    Returns as soon as the signals are sent; ``wait_empty`` waits for the processes to be gone. A
    group that no longer exists is fine.
    """
    path = os.fspath(group)
    try:
        _write(os.path.join(path, "cgroup.kill"), b"1")
    except OSError as exc:
        if exc.errno not in _GONE:
            raise _refused("kill the processes of", path, exc) from exc
        if os.path.isdir(path):
            raise CgroupUnavailable(f"the kernel has no cgroup.kill (Linux < 5.14) in {path}") from exc


def remove(group: StrPath) -> bool:
    """Remove ``group`` and the groups below it (deepest first); True when it is gone.

    False when a group still holds a process (``EBUSY``), leaving the rest for a later try. Another
    refusal raises ``CgroupUnavailable``.
    """
    gone = True
    for path in reversed(_groups_below(os.fspath(group))):
        try:
            os.rmdir(path)
        except OSError as exc:
            if exc.errno in (errno.EBUSY, errno.ENOTEMPTY):
                gone = False
            elif exc.errno not in _GONE:
                raise _refused("remove the control group", path, exc) from exc
    return gone


def dead_server_groups(parent: StrPath, alive: Callable[[int, float], bool]) -> list[Path]:
    """The server groups under ``parent`` whose owner is dead, as ``alive(pid, start)`` judges it.

    ``alive`` is the caller's process-identity check (see ``server_group_name`` for how to compare
    start times). Directories with other names, including other programs' groups, are never returned.
    """
    try:
        with os.scandir(os.fspath(parent)) as entries:
            candidates = sorted((entry.name, entry.path) for entry in entries if entry.is_dir(follow_symlinks=False))
    except OSError as exc:
        if exc.errno in (*_GONE, errno.ENOTDIR):
            return []
        raise _refused("list", os.fspath(parent), exc) from exc
    dead: list[Path] = []
    for name, path in candidates:
        owner = parse_server_group_name(name)
        if owner is not None and not alive(*owner):
            dead.append(_as_path(path))
    return dead


def reap_server_group(group: StrPath, timeout: float) -> bool:
    """Kill everything in a server's group (every session's included), wait for it, remove every group.

    True when nothing is left, group included; False when a process outlived ``timeout`` (the
    groups that emptied are removed anyway, so a later try has less to do).
    """
    kill(group)
    wait_empty(group, timeout)
    return remove(group)
