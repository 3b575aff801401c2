"""The live-session registry's own files: what a writer killed mid-write leaves is removed, a live writer's is not."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from expeditor.executor import SessionRegistry


def dead_pid() -> int:
    finished = subprocess.Popen(["/bin/true"])
    finished.wait()
    return finished.pid


def test_the_temporary_files_of_dead_writers_are_removed_and_live_writers_kept(tmp_path: Path) -> None:
    registry = SessionRegistry(tmp_path)
    abandoned = tmp_path / f".tmp-{dead_pid()}-abc123.json"
    in_progress = tmp_path / f".tmp-{os.getpid()}-def456.json"
    entry = tmp_path / "a-session.json"
    for path in (abandoned, in_progress, entry):
        path.write_text("{")
    assert registry.remove_abandoned_writes() == [abandoned.name]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([in_progress.name, entry.name])
