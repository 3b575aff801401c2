"""A launcher that writes down the argv it was given, then becomes the real CLI (same pid, same argv).

expeditor is configured with the launcher as its ``claude_command``; each launch appends one JSON
line (the argument list after the command) to the log and ``execv``s the real CLI with exactly those
arguments, so a test asserts on the argv the real CLI ran with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["recorded_argvs", "recording_launcher"]

_LAUNCHER = """\
#!{python}
import json, os, sys
with open({log!r}, "a", encoding="utf-8") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
os.execv({cli!r}, [{cli!r}, *sys.argv[1:]])
"""


def recording_launcher(cli: Path, directory: Path) -> tuple[Path, Path]:
    """Write the launcher for ``cli`` into ``directory``; returns (launcher, log)."""
    launcher, log = directory / "recording-claude", directory / "argv.jsonl"
    launcher.write_text(_LAUNCHER.format(python=sys.executable, log=str(log), cli=str(cli)))
    launcher.chmod(0o755)
    return launcher, log


def recorded_argvs(log: Path) -> list[list[str]]:
    """Every launch's arguments, in launch order."""
    if not log.exists():
        return []
    lines: list[Any] = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line]
    return [[str(argument) for argument in argv] for argv in lines]
