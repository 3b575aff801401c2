"""Git worktrees for isolated jobs: one per job, on a branch of its own, made at the job's first launch.

A job run with ``isolation: worktree`` works in ``<home>/worktrees/<project>-<hash>/<campaign>/<job>``
on branch ``expeditor/<campaign>/<job>``, made from the project's ``HEAD`` when the job first launches;
every later launch of the job (a retry, a resume, a rerun after a crash) finds the same worktree again.
Preparing holds an exclusive lock on the worktree root, so two processes preparing one job at once
end with one worktree, and git never sees two worktree additions of one repository racing.

The branch is the job's deliverable. When a job succeeds, what it left uncommitted is committed to its
branch (one commit by expeditor), then its worktree is removed unless the recipe keeps it. A failed or
cancelled job keeps both, for inspection; ``expeditor worktrees prune`` removes them later, committing
their leftovers the same way first, so no work is ever lost with a worktree.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from expeditor.config import Settings
from expeditor.errors import ExpeditorError, InvalidInput
from expeditor.homes import home_for_project, make_private_dir, worktrees_root

__all__ = [
    "BRANCH_PREFIX",
    "Isolation",
    "JobWorktree",
    "WorktreeError",
    "branch_for",
    "finish_worktree",
    "isolatable_project",
    "prepare_worktree",
    "remove_worktree",
    "repository_of",
    "save_leftovers",
    "worktree_at",
]

logger = logging.getLogger(__name__)

BRANCH_PREFIX = "expeditor"
_GIT_TIMEOUT = 60.0
# Who the leftovers commit is by when the repository names nobody (a fresh CI machine, a container).
_FALLBACK_IDENTITY = ("-c", "user.name=expeditor", "-c", "user.email=expeditor@localhost")


class Isolation(StrEnum):
    """Where a job works: in the project's own checkout, or in a git worktree of its own."""

    NONE = "none"
    WORKTREE = "worktree"


class WorktreeError(ExpeditorError):
    """git could not make, find or remove a job's worktree; the message has git's own words."""


@dataclass(frozen=True)
class JobWorktree:
    """A job's worktree: where it is, its branch, and the repository it belongs to (the project's top level)."""

    path: Path
    branch: str
    repository: Path

    def directory_for(self, project: Path) -> Path:
        """Where a job of ``project`` works in this worktree: the same place relative to the repository's top
        level, so a job of a monorepo's subdirectory stays in that subdirectory (made when HEAD lacks it)."""
        resolved = project.resolve()
        if resolved == self.repository or not resolved.is_relative_to(self.repository):
            return self.path
        inside = self.path / resolved.relative_to(self.repository)
        inside.mkdir(parents=True, exist_ok=True)
        return inside


def _git(cwd: Path, *args: str) -> str:
    try:
        completed = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=_GIT_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise WorktreeError(f"git {args[0]} in {cwd} could not run: {exc}") from exc
    if completed.returncode != 0:
        said = completed.stderr.strip().splitlines() or [f"exit status {completed.returncode}"]
        raise WorktreeError(f"git {' '.join(args[:2])} in {cwd} failed: {said[-1]}")
    return completed.stdout.strip()


def _succeeds(cwd: Path, *args: str) -> bool:
    try:
        _git(cwd, *args)
    except WorktreeError:
        return False
    return True


def branch_for(campaign: str, job: str) -> str:
    """``expeditor/<campaign>/<job>``; campaign and job names are identifiers (``A-Z a-z 0-9 _ -``), which
    are valid in a branch name as they are, except a leading ``-``, which git reads as an option."""
    return "/".join((BRANCH_PREFIX, campaign.lstrip("-") or "_", job.lstrip("-") or "_"))


def repository_of(project: Path) -> Path:
    """The git top level of ``project``; InvalidInput when it is no repository or has no commit to start from."""
    if not _succeeds(project, "rev-parse", "--is-inside-work-tree"):
        raise InvalidInput(
            f"isolation 'worktree' needs a git repository, and {project} is not in one: "
            "run `git init` and commit there, or dispatch without isolation"
        )
    if not _succeeds(project, "rev-parse", "--verify", "--quiet", "HEAD^{commit}"):
        raise InvalidInput(
            f"isolation 'worktree' starts each job from HEAD, and the repository at {project} has no commit yet: "
            "commit once, or dispatch without isolation"
        )
    return Path(_git(project, "rev-parse", "--show-toplevel")).resolve()


def isolatable_project(settings: Settings, project: Path) -> Path:
    """The repository top level of ``project``, if a job's worktree can be made from it; else InvalidInput.

    The project must be inside ``allowed_roots`` itself: the worktree root is allowed only for the
    worktrees expeditor makes, never as a project to make more from.
    """
    resolved = project.resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in settings.allowed_roots):
        roots = ", ".join(str(root) for root in settings.allowed_roots)
        raise InvalidInput(
            f"cwd {resolved} is outside the allowed roots ({roots}): a job's worktree is made from a project "
            "inside them; add it to EXPEDITOR_ALLOWED_ROOTS"
        )
    return repository_of(resolved)


@contextmanager
def _root_lock(root: Path) -> Generator[None]:
    """An exclusive lock on the worktree root, held across processes (released when its holder dies)."""
    make_private_dir(root)
    descriptor = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _is_worktree_of(path: Path, repository: Path, branch: str) -> bool:
    """Whether ``path`` is a worktree of ``repository`` with ``branch`` checked out (what a preparer left)."""
    if not (path / ".git").exists():
        return False
    try:
        top = Path(_git(path, "rev-parse", "--show-toplevel")).resolve()
        common = Path(_git(path, "rev-parse", "--path-format=absolute", "--git-common-dir")).resolve()
        checked_out = _git(path, "symbolic-ref", "--quiet", "--short", "HEAD")
    except WorktreeError:
        return False
    own_common = Path(_git(repository, "rev-parse", "--path-format=absolute", "--git-common-dir")).resolve()
    return top == path.resolve() and common == own_common and checked_out == branch


def prepare_worktree(settings: Settings, project: Path, campaign: str, job: str) -> JobWorktree:
    """The job's worktree, made now from the project's ``HEAD`` (or from its branch, when an earlier launch
    left the branch but not the worktree), or found as an earlier launch left it. Blocking: call it from a
    worker thread in async code."""
    repository = isolatable_project(settings, project)
    root = worktrees_root(settings.home)
    path = home_for_project(repository, root) / campaign / job
    branch = branch_for(campaign, job)
    with _root_lock(root):
        if _is_worktree_of(path, repository, branch):
            return JobWorktree(path, branch, repository)
        if path.exists() and any(path.iterdir()):
            raise WorktreeError(
                f"{path} exists but is not the worktree of branch {branch} in {repository}: "
                "move it away, and the next launch makes the worktree again"
            )
        # A worktree whose directory was deleted by hand is still registered; forget it first.
        _git(repository, "worktree", "prune")
        make_private_dir(path.parent)
        if _succeeds(repository, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"):
            _git(repository, "worktree", "add", str(path), branch)
            logger.info("%s/%s: worktree %s made again on its branch %s", campaign, job, path, branch)
        else:
            _git(repository, "worktree", "add", "-b", branch, str(path), "HEAD")
            logger.info("%s/%s: worktree %s made on new branch %s from HEAD", campaign, job, path, branch)
    return JobWorktree(path, branch, repository)


def worktree_at(path: Path) -> JobWorktree | None:
    """The worktree at ``path`` as git sees it (its branch and repository); None when git cannot read it."""
    try:
        branch = _git(path, "symbolic-ref", "--quiet", "--short", "HEAD")
        common = Path(_git(path, "rev-parse", "--path-format=absolute", "--git-common-dir"))
    except WorktreeError:
        return None
    return JobWorktree(path, branch, common.parent)


def save_leftovers(worktree: JobWorktree, why: str) -> bool:
    """Commit what the job left uncommitted in its worktree to its branch; whether there was anything.

    Hooks are not run: this commit records what the job did, it is not one of the user's.
    """
    path = worktree.path
    _git(path, "add", "--all")
    if _succeeds(path, "diff", "--cached", "--quiet"):
        return False
    identity = () if _succeeds(path, "config", "user.email") else _FALLBACK_IDENTITY
    _git(path, *identity, "commit", "--quiet", "--no-verify", "-m", f"expeditor: {why}")
    return True


def remove_worktree(worktree: JobWorktree) -> None:
    """Remove the worktree (its ignored files with it); its branch stays."""
    _git(worktree.repository, "worktree", "remove", "--force", str(worktree.path))


def finish_worktree(worktree: JobWorktree, *, succeeded: bool, keep: bool, job: str) -> str:
    """What becomes of a job's worktree at the end of an attempt, done; returns one sentence saying what.

    Never raises: the attempt's verdict stands whatever git does here, and a worktree that could not be
    finished is kept.
    """
    if not succeeded:
        return f"its worktree {worktree.path} and branch {worktree.branch} are kept for inspection"
    try:
        saved = save_leftovers(worktree, f"what {job} left uncommitted")
        committed = "; its uncommitted changes were committed to it" if saved else ""
        if keep:
            return f"branch {worktree.branch} holds its commits{committed}; its worktree {worktree.path} is kept"
        remove_worktree(worktree)
    except WorktreeError as exc:
        logger.warning("%s: its worktree %s is kept: %s", job, worktree.path, exc)
        return f"its worktree {worktree.path} is kept on branch {worktree.branch}: {exc}"
    return f"branch {worktree.branch} holds its commits{committed}; its worktree was removed"
