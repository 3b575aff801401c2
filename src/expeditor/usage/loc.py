"""Lines of code a session changed, measured by git between its start and end state.

A session may edit files, commit, amend or stash; comparing ``HEAD`` or ``git diff`` output
alone misses some of that. So each state is the whole working tree written as a git tree
(tracked and untracked files, ``.gitignore`` respected) through a private copy of the index:
the user's index and any ``index.lock`` the agent holds are never touched, and the copy's stat
cache keeps a large repository fast. The objects this writes go to a cache directory of
expeditor's own, with the repository's objects as an alternate, so measuring never adds a byte
to the user's repository. The cache is shared by every run and snapshot, so an untracked file
is compressed and written once, not once per snapshot; it is emptied once a day. Untracked files
above ``MAX_UNTRACKED_BYTES`` are left out: data and build output are not lines of code, and
hashing them would delay every launch. Expeditor's own home, when set inside the repository, is
left out too.

Lines changed = added + removed between the two trees, renames detected (binary files count 0).
Outside a git repository nothing changes by definition and the answer is 0; git failing for any
other reason gives None (not measured), never an error.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from expeditor.homes import create_private_file, make_private_dir

__all__ = ["MAX_UNTRACKED_BYTES", "WorktreeState", "lines_changed", "worktree_state"]

logger = logging.getLogger(__name__)

MAX_UNTRACKED_BYTES = 1 << 20
_GIT_TIMEOUT = 20.0
_CACHE_LIFETIME = 86400.0


@dataclass(frozen=True)
class WorktreeState:
    """A work tree at one moment: its tree id, and the object directories that hold it.

    ``tree`` is None outside a git work tree (nothing there counts as changed).
    """

    tree: str | None
    objects: Path | None = None
    repository_objects: Path | None = None


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    completed = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=_GIT_TIMEOUT,
        check=True,
    )
    return completed.stdout.strip()


def _large_untracked(top: Path) -> list[str]:
    listing = _git(top, "ls-files", "--others", "--exclude-standard", "-z")
    large = []
    for name in filter(None, listing.split("\0")):
        try:
            if (top / name).stat().st_size > MAX_UNTRACKED_BYTES:
                large.append(name)
        except OSError:
            continue
    return large


def _object_cache(cache: Path) -> Path:
    """``cache``, emptied when it is more than a day old so that it cannot grow without bound."""
    stamp = cache / "created"
    try:
        if time.time() - stamp.stat().st_mtime > _CACHE_LIFETIME:
            shutil.rmtree(cache, ignore_errors=True)
    except FileNotFoundError:
        pass
    make_private_dir(cache)
    create_private_file(stamp)
    return cache


def _inside(top: Path, paths: Iterable[Path]) -> list[str]:
    """The paths among ``paths`` that lie inside the work tree at ``top``, relative to it."""
    inside: list[str] = []
    for path in paths:
        try:
            relative = path.resolve().relative_to(top.resolve())
        except (OSError, ValueError):
            continue
        if relative.parts:
            inside.append(relative.as_posix())
    return inside


def worktree_state(cwd: Path, cache: Path, excluded: Iterable[Path] = ()) -> WorktreeState | None:
    """``cwd``'s work tree as it is now, its new objects written to ``cache``; None when git fails.

    ``excluded``: directories never part of the state, such as expeditor's own home when it was set
    inside the repository: what expeditor writes there is no line an agent changed.
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
            return WorktreeState(tree=None)
        top = Path(_git(cwd, "rev-parse", "--show-toplevel"))
        index = Path(_git(cwd, "rev-parse", "--path-format=absolute", "--git-path", "index"))
        repository_objects = Path(_git(cwd, "rev-parse", "--path-format=absolute", "--git-path", "objects"))
        objects = _object_cache(cache)
        with tempfile.TemporaryDirectory(prefix="expeditor-loc-") as scratch:
            private_index = Path(scratch) / "index"
            if index.exists():
                shutil.copyfile(index, private_index)
            env = {
                **os.environ,
                "GIT_INDEX_FILE": str(private_index),
                "GIT_OBJECT_DIRECTORY": str(objects),
                "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(repository_objects),
            }
            left_out = [*_inside(top, excluded), *_large_untracked(top)]
            pathspec = ".\0" + "".join(f":(exclude,literal){name}\0" for name in left_out)
            _git(top, "add", "--all", "--pathspec-from-file=-", "--pathspec-file-nul", env=env, stdin=pathspec)
            tree = _git(top, "write-tree", env=env)
        return WorktreeState(tree=tree, objects=objects, repository_objects=repository_objects)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("could not snapshot the git work tree at %s: %s", cwd, exc)
        return None


def lines_changed(cwd: Path, before: WorktreeState | None, after: WorktreeState | None) -> int | None:
    """Lines added plus removed between two states; None when unknown."""
    if before is None or after is None:
        return None
    if before.tree is None or after.tree is None or before.tree == after.tree:
        return 0
    directories = (before.repository_objects, before.objects, after.objects)
    alternates = os.pathsep.join(dict.fromkeys(str(path) for path in directories if path is not None))
    env = {**os.environ, "GIT_ALTERNATE_OBJECT_DIRECTORIES": alternates}
    try:
        # Rename detection on: a moved file counts the lines it changed, not its length twice.
        numstat = _git(cwd, "diff-tree", "-r", "-M", "--numstat", before.tree, after.tree, env=env)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("could not compare git trees %s and %s at %s: %s", before.tree, after.tree, cwd, exc)
        return None
    total = 0
    for line in numstat.splitlines():
        added, removed, _ = line.split("\t", 2)
        total += int(added) if added.isdigit() else 0
        total += int(removed) if removed.isdigit() else 0
    return total
