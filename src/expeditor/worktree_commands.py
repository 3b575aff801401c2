"""``expeditor worktrees`` and ``expeditor worktrees prune``: the isolated jobs' git worktrees of this home.

A worktree is ``<home>/worktrees/<project>-<hash>/<campaign>/<job>`` (see ``expeditor.runs.worktrees``),
so its job is read from its path and its state from the campaign store. Pruning removes the worktrees
of finished jobs (succeeded, failed or cancelled), committing what each left uncommitted to its branch
first; branches always stay, and a job that may still run (pending, running, interrupted) keeps its worktree.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from expeditor.config import Settings, load_settings
from expeditor.homes import worktrees_root

__all__ = ["WorktreeEntry", "add_worktree_commands", "list_worktrees", "prune_worktrees"]

_FINISHED = ("success", "failure", "cancelled")


@dataclass(frozen=True)
class WorktreeEntry:
    """One job's worktree as it is on disk, with its job's state (``unrecorded`` when the store has none)."""

    campaign: str
    job: str
    path: str
    branch: str | None
    state: str


def list_worktrees(settings: Settings) -> list[WorktreeEntry]:
    """Every job worktree under this home's worktree root, ordered by campaign and job."""
    from expeditor.runs.worktrees import JobWorktree, worktree_at
    from expeditor.state import open_store
    from expeditor.state.opening import store_may_hold_records

    root = worktrees_root(settings.home)
    found: list[tuple[str, str, JobWorktree | None, Path]] = []
    for path in sorted(root.glob("*/*/*")):
        if (path / ".git").is_file():
            campaign, job = path.parent.name, path.name
            found.append((campaign, job, worktree_at(path), path))
    if not found:
        return []
    store = open_store(settings) if store_may_hold_records(settings) else None
    entries: list[WorktreeEntry] = []
    try:
        for campaign, job, worktree, path in found:
            record = store.get(campaign, job) if store is not None else None
            state = record.status.value if record is not None else "unrecorded"
            entries.append(WorktreeEntry(campaign, job, str(path), worktree.branch if worktree else None, state))
    finally:
        if store is not None:
            store.close()
    return entries


def prune_worktrees(settings: Settings, out: TextIO) -> int:
    """Remove the worktrees of finished jobs; 0 when every one that should go went, else 1."""
    from expeditor.runs.worktrees import WorktreeError, remove_worktree, save_leftovers, worktree_at

    code = 0
    pruned = 0
    for entry in list_worktrees(settings):
        if entry.state not in _FINISHED:
            out.write(f"kept {entry.path}: its job is {entry.state}\n")
            continue
        worktree = worktree_at(Path(entry.path))
        if worktree is None:
            out.write(f"kept {entry.path}: git cannot read it as a worktree\n")
            code = 1
            continue
        try:
            saved = save_leftovers(worktree, f"what {entry.campaign}/{entry.job} left uncommitted ({entry.state})")
            remove_worktree(worktree)
        except WorktreeError as exc:
            out.write(f"kept {entry.path}: {exc}\n")
            code = 1
            continue
        pruned += 1
        note = ", its uncommitted changes committed to it" if saved else ""
        out.write(f"removed {entry.path} ({entry.state}); branch {worktree.branch} stays{note}\n")
    out.write(f"{pruned} worktree(s) removed\n")
    return code


def _show(entries: list[WorktreeEntry], out: TextIO, *, as_json: bool, home: Path) -> None:
    if as_json:
        payload: dict[str, Any] = {"home": str(home), "worktrees": [asdict(entry) for entry in entries]}
        out.write(json.dumps(payload, indent=2) + "\n")
        return
    if not entries:
        out.write(f"no job worktrees in the home {home}\n")
        return
    for entry in entries:
        out.write(f"{entry.campaign}/{entry.job}  {entry.state}  {entry.branch or '?'}  {entry.path}\n")


def _worktrees(args: argparse.Namespace) -> int:
    settings = load_settings(home=getattr(args, "home", None))
    if args.action == "prune":
        return prune_worktrees(settings, sys.stdout)
    _show(list_worktrees(settings), sys.stdout, as_json=args.json, home=settings.home)
    return 0


def add_worktree_commands(commands: Any) -> None:
    """Add ``worktrees [prune]`` to the command line's subcommands (``commands``: argparse's subparsers)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "worktrees",
        help="the isolated jobs' git worktrees, with their jobs and states; prune removes finished jobs' ones",
        description="List the git worktrees of jobs run with isolation: worktree, with each job's state and branch. "
        "`prune` removes the worktrees of finished jobs (their uncommitted changes are committed to their "
        "branches first); branches always stay.",
    )
    parser.add_argument("action", nargs="?", choices=("list", "prune"), default="list", help="list (default) or prune")
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    parser.set_defaults(handler=_worktrees)
