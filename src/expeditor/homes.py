"""Where a project's state lives, and how expeditor creates what it keeps there.

The default home is a per-user state directory keyed by project, never a directory inside the
user's repository: ``$XDG_STATE_HOME/expeditor/<project>-<hash>`` (``~/.local/state`` when the
variable is unset; ``~/Library/Application Support`` on macOS). The project is the git top level
of the working directory, else the directory itself, so every server, runner and ``status`` started
anywhere in one repository meet in one home, and two projects never share one (the hash is of the
project's resolved path; the readable part is its base name). A ``./.expeditor`` that an earlier
version created in the project is still used, so nobody loses records.

Homes hold prompts, inputs and results: directories are created 0700 and files 0600, by these
functions rather than by changing the process umask (files the agents write in the user's project
keep their usual modes).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "CONFIG_FILE_NAME",
    "LEGACY_HOME_NAME",
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "STATE_FILE_NAME",
    "create_private_file",
    "default_home",
    "describe_home",
    "home_for_project",
    "make_private_dir",
    "project_root",
    "state_base",
    "worktrees_root",
]

LEGACY_HOME_NAME = ".expeditor"
STATE_FILE_NAME = "state.sqlite3"
CONFIG_FILE_NAME = "config.yaml"
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_APPLICATION = "expeditor"
_HASH_LENGTH = 12
_READABLE_LENGTH = 40
_UNREADABLE = re.compile(r"[^A-Za-z0-9._-]+")
_GIT_TIMEOUT = 10.0


def state_base(environ: Mapping[str, str], user_home: Path) -> Path:
    """The per-user directory under which each project's home is created."""
    if sys.platform == "darwin":
        return user_home / "Library" / "Application Support" / _APPLICATION
    configured = environ.get("XDG_STATE_HOME", "")
    # The XDG base directory specification: a relative path is invalid and is ignored.
    base = Path(configured) if configured and Path(configured).is_absolute() else user_home / ".local" / "state"
    return base / _APPLICATION


def project_root(directory: Path) -> Path:
    """The git top level holding ``directory``, else ``directory`` itself, resolved."""
    resolved = directory.resolve()
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=resolved,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return resolved  # no git, or it hung: the directory itself is the project
    top = completed.stdout.strip()
    return Path(top).resolve() if completed.returncode == 0 and top else resolved


def home_for_project(project: Path, base: Path) -> Path:
    """``base/<readable name>-<12 hex>``: readable in a listing, and distinct for every project path."""
    digest = hashlib.sha256(os.fsencode(project)).hexdigest()[:_HASH_LENGTH]
    readable = _UNREADABLE.sub("-", project.name).strip("-.")[:_READABLE_LENGTH] or "root"
    return base / f"{readable}-{digest}"


def default_home(directory: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The home of the project ``directory`` (default: the working directory) belongs to.

    An existing home ``.expeditor`` in the directory itself or at the project's top level (where earlier
    versions put it) is that project's home; otherwise the per-user home keyed by the project.
    """
    here = (directory or Path.cwd()).absolute()
    project = project_root(here)
    for legacy in dict.fromkeys((here / LEGACY_HOME_NAME, project / LEGACY_HOME_NAME)):
        if _is_home(legacy):
            return legacy
    return home_for_project(project, state_base(os.environ if environ is None else environ, Path.home()))


def worktrees_root(home: Path) -> Path:
    """Where the jobs of ``isolation: worktree`` get their git worktrees: expeditor's own, outside the checkout,
    so a session may work there without the directory being listed in ``allowed_roots``."""
    return home / "worktrees"


def describe_home(home: Path) -> str:
    """``home`` as the log names it once at start, saying when it is an existing ``./.expeditor``."""
    if home.name == LEGACY_HOME_NAME:
        return (
            f"{home} (a {LEGACY_HOME_NAME} directory in the project, used because it exists so that its records "
            "are found; without it the home would be a per-user state directory)"
        )
    return str(home)


def _is_home(directory: Path) -> bool:
    """Whether ``directory`` holds records or settings: a ``.expeditor/work`` of notes alone is no home."""
    return (directory / STATE_FILE_NAME).is_file() or (directory / CONFIG_FILE_NAME).is_file()


def make_private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents, each 0700 (an existing directory keeps its mode)."""
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise
    return path


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 0600 unless it exists; True when this call created it."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    os.close(descriptor)
    return True
