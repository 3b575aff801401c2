"""Lines of code a session changed, measured by git between its start and end state.

A session may edit files, commit, amend or stash; comparing ``HEAD`` or ``git diff`` output
alone misses some of that. So each state is the whole working tree written as a git tree
object (tracked and untracked files, ``.gitignore`` respected) through a private copy of
the index: the user's index and any ``index.lock`` the agent holds are never touched, and
the copy's stat cache keeps a large repository fast. Lines changed = added + removed
between the two trees (binary files count 0). Outside a git repository nothing changes
by definition and the answer is 0; git failing for any other reason gives None (not
measured), never an error.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["NOT_A_REPOSITORY", "lines_changed", "worktree_state"]

logger = logging.getLogger(__name__)

NOT_A_REPOSITORY = "not-a-repository"
"""The state of a directory outside any git work tree."""

_GIT_TIMEOUT = 60.0


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    completed = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=_GIT_TIMEOUT,
        check=True,
    )
    return completed.stdout.strip()


def worktree_state(cwd: Path) -> str | None:
    """The id of a git tree holding ``cwd``'s work tree as it is now.

    ``NOT_A_REPOSITORY`` outside git; None when git is missing or fails.
    """
    if shutil.which("git") is None:
        return None
    try:
        inside = subprocess.run(
            ["git", "rev-parse", "--is-inside-work-tree"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
        )
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return NOT_A_REPOSITORY
        top = Path(_git(cwd, "rev-parse", "--show-toplevel"))
        index = Path(_git(cwd, "rev-parse", "--path-format=absolute", "--git-path", "index"))
        with tempfile.TemporaryDirectory(prefix="expeditor-loc-") as scratch:
            private_index = Path(scratch) / "index"
            if index.exists():
                shutil.copyfile(index, private_index)
            env = {**os.environ, "GIT_INDEX_FILE": str(private_index)}
            _git(top, "add", "--all", "--", ".", env=env)
            return _git(top, "write-tree", env=env)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("could not snapshot the git work tree at %s: %s", cwd, exc)
        return None


def lines_changed(cwd: Path, before: str | None, after: str | None) -> int | None:
    """Lines added plus removed between two states from :func:`worktree_state`; None when unknown."""
    if before is None or after is None:
        return None
    if NOT_A_REPOSITORY in (before, after) or before == after:
        return 0
    try:
        # Rename detection on: a moved file counts the lines it changed, not its length twice.
        numstat = _git(cwd, "diff-tree", "-r", "-M", "--numstat", before, after)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("could not compare git trees %s and %s at %s: %s", before, after, cwd, exc)
        return None
    total = 0
    for line in numstat.splitlines():
        added, removed, _ = line.split("\t", 2)
        total += int(added) if added.isdigit() else 0
        total += int(removed) if removed.isdigit() else 0
    return total
