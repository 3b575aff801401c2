"""Run a command that sees one directory read-only, as root, without touching anyone else's view of it.

``unshare --mount --propagation private python -m tests.support.read_only_home DIR -- COMMAND...``
bind-mounts DIR onto itself, remounts the bind read-only, checks that a file cannot be created in it,
then execs COMMAND. The mounts live in the new mount namespace only, so they vanish with the command,
even if the test that ran it is killed. File permissions do not stop root; a read-only mount does.

Exits 77 (and says why on stderr) when the directory could not be made read-only.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

CANNOT_MAKE_READ_ONLY = 77


def make_read_only(directory: Path) -> str | None:
    """Mount ``directory`` read-only in this mount namespace; None, or why it could not be done."""
    for command in (
        ["mount", "--bind", str(directory), str(directory)],
        ["mount", "-o", "remount,bind,ro", str(directory)],
    ):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {done.stderr.strip()}"
    try:
        (directory / ".write-probe").touch()
    except OSError as exc:
        return None if exc.errno == errno.EROFS else f"the probe failed otherwise: {exc}"
    return f"{directory} is still writable after a read-only remount"


def main(argv: list[str]) -> int:
    directory, separator, *command = argv
    if separator != "--" or not command:
        sys.stderr.write("usage: read_only_home DIR -- COMMAND...\n")
        return 2
    why = make_read_only(Path(directory))
    if why is not None:
        sys.stderr.write(f"read_only_home: {why}\n")
        return CANNOT_MAKE_READ_ONLY
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
