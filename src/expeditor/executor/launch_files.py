"""Files a launch needs that must not be in its argv: written private before it starts, removed when it ends.

A command line is readable by every local user (``/proc/PID/cmdline``), so a session's MCP config,
which may carry a credential, is passed by path instead. The file is created 0600 in a 0700
directory under expeditor's home and removed on every exit path of the run.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from expeditor.homes import make_private_dir

__all__ = ["LaunchFile", "remove_launch_files", "write_launch_files"]


@dataclass(frozen=True)
class LaunchFile:
    path: Path
    content: str


def write_launch_files(files: tuple[LaunchFile, ...]) -> None:
    """Create each file, readable by this user only; on a failure, remove what was written and raise OSError."""
    written: list[LaunchFile] = []
    try:
        for launch_file in files:
            make_private_dir(launch_file.path.parent)
            descriptor = os.open(launch_file.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            written.append(launch_file)
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                stream.write(launch_file.content)
    except OSError:
        remove_launch_files(tuple(written))
        raise


def remove_launch_files(files: tuple[LaunchFile, ...]) -> None:
    for launch_file in files:
        with contextlib.suppress(OSError):
            launch_file.path.unlink()
