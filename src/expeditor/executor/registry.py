"""The live-session registry: one JSON file per running session under ``<home>/sessions/``.

It outlives the process that wrote it on purpose. ``expeditor status`` reads it from another
process, and a server that starts after another one was SIGKILLed finds the sessions that
were left behind (their owning server's pid and start time tell a dead owner from a live one).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from expeditor.executor.models import SessionKind, Signal
from expeditor.homes import make_private_dir
from expeditor.ids import validate_identifier
from expeditor.process_identity import process_alive

__all__ = ["SessionEntry", "SessionRegistry"]


class SessionEntry(BaseModel):
    """What the registry knows about one live session."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    kind: SessionKind
    pid: int
    pid_start_time: float
    pgid: int
    caller_session_id: str | None
    run_id: str
    cwd: str
    transcript_path: str | None
    started_at: float = Field(description="Epoch seconds.")
    owner_pid: int
    owner_start_time: float
    last_moved: dict[Signal, float] = Field(default_factory=dict)
    cgroup: str | None = Field(default=None, description="The session's control group; None when the tree holds it.")
    task_id: str | None = Field(default=None, description="The MCP task whose run this is, if a client asked for one.")

    @property
    def containment(self) -> str:
        return "tree" if self.cgroup is None else "cgroup"

    def owner_alive(self) -> bool:
        return process_alive(self.owner_pid, self.owner_start_time)

    def session_alive(self) -> bool:
        return process_alive(self.pid, self.pid_start_time)


_TEMPORARY = ".tmp-"


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SessionRegistry:
    """Reads and writes the registry directory; every write is atomic (write, fsync-free rename)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, session_id: str) -> Path:
        return self.directory / f"{validate_identifier(session_id)}.json"

    def write(self, entry: SessionEntry) -> None:
        make_private_dir(self.directory)
        target = self._path(entry.session_id)
        # The writer's pid in the name: a writer killed between create and rename leaves a file that
        # ``remove_abandoned_writes`` can tell from a live writer's.
        descriptor, temporary = tempfile.mkstemp(
            dir=self.directory, prefix=f"{_TEMPORARY}{os.getpid()}-", suffix=".json"
        )
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                stream.write(entry.model_dump_json())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def remove_abandoned_writes(self) -> list[str]:
        """Delete the temporary files of writers that died mid-write (SIGKILLed); returns their names."""
        removed: list[str] = []
        try:
            names = [path.name for path in self.directory.glob(f"{_TEMPORARY}*")]
        except OSError:
            return removed
        for name in names:
            writer = name[len(_TEMPORARY) :].split("-", 1)[0]
            if writer.isdigit() and not _pid_exists(int(writer)):
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / name).unlink()
                    removed.append(name)
        return removed

    def remove(self, session_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(session_id).unlink()

    def entries(self) -> list[SessionEntry]:
        """Every readable entry; a half-written or foreign file is skipped, never fatal."""
        found: list[SessionEntry] = []
        try:
            paths = sorted(self.directory.glob("*.json"))
        except OSError:
            return found
        for path in paths:
            if path.name.startswith("."):
                continue
            try:
                found.append(SessionEntry.model_validate(json.loads(path.read_bytes())))
            except (OSError, ValueError, ValidationError):
                continue
        return found
