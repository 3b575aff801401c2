"""Lines a session changed, measured by git between two work-tree states, on real repositories."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from expeditor.usage import loc
from expeditor.usage.loc import MAX_UNTRACKED_BYTES, WorktreeState, lines_changed

TEN_LINES = "".join(f"line {number}\n" for number in range(10))


def git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]
    return subprocess.run(["git", *identity, *args], cwd=repo, check=True, capture_output=True, text=True).stdout


_CACHE: list[Path] = []


@pytest.fixture(autouse=True)
def object_cache(tmp_path: Path) -> None:
    _CACHE[:] = [tmp_path / "object-cache"]


def worktree_state(path: Path) -> WorktreeState | None:
    """A snapshot into this test's object cache."""
    return loc.worktree_state(path, _CACHE[0])


@pytest.fixture(autouse=True)
def no_user_git_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's git configuration (autocrlf, hooks, templates) must not change what is measured."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "app.py").write_text(TEN_LINES)
    (repo / ".gitignore").write_text("build/\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "start")
    return repo


def changed(repo: Path, step: Callable[[], object]) -> int | None:
    """Lines changed by calling ``step()`` between two snapshots, as a run is measured."""
    before = worktree_state(repo)
    step()
    return lines_changed(repo, before, worktree_state(repo))


def edit_three_lines(repo: Path) -> None:
    lines = TEN_LINES.splitlines(keepends=True)
    lines[2:5] = ["two\n", "three\n", "four\n"]
    (repo / "app.py").write_text("".join(lines))


def test_an_edit_counts_the_lines_added_plus_the_lines_removed(repo: Path) -> None:
    assert changed(repo, lambda: edit_three_lines(repo)) == 6


def test_nothing_done_is_zero_and_the_same_tree(repo: Path) -> None:
    first, second = worktree_state(repo), worktree_state(repo)
    assert first is not None
    assert second is not None
    assert first.tree == second.tree
    assert lines_changed(repo, first, second) == 0
    assert changed(repo, lambda: None) == 0


def test_new_untracked_files_count_and_ignored_ones_do_not(repo: Path) -> None:
    def step() -> None:
        (repo / "new.py").write_text("a\nb\nc\nd\ne\n")
        (repo / "build").mkdir()
        (repo / "build" / "out.txt").write_text("x\n" * 100)

    assert changed(repo, step) == 5


def test_a_deleted_file_counts_its_lines(repo: Path) -> None:
    assert changed(repo, lambda: (repo / "app.py").unlink()) == 10


def test_a_commit_made_during_the_step_still_counts(repo: Path) -> None:
    def step() -> None:
        edit_three_lines(repo)
        git(repo, "commit", "-q", "-am", "the agent commits its work")

    assert changed(repo, step) == 6


def test_changes_made_before_the_step_are_not_the_step_s(repo: Path) -> None:
    (repo / "app.py").write_text(TEN_LINES + "left by the user\n")
    git(repo, "add", "app.py")
    (repo / "notes.txt").write_text("draft\n")
    assert changed(repo, lambda: (repo / "notes.txt").write_text("draft\nmore\n")) == 1


def test_binary_files_count_no_lines(repo: Path) -> None:
    def step() -> None:
        (repo / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" * 50)
        (repo / "new.py").write_text("a\n")

    assert changed(repo, step) == 1


def test_a_subdirectory_measures_the_whole_work_tree(repo: Path) -> None:
    (repo / "pkg").mkdir()
    (repo / "pkg" / "mod.py").write_text("x = 1\n")
    before = worktree_state(repo / "pkg")
    edit_three_lines(repo)
    assert lines_changed(repo / "pkg", before, worktree_state(repo / "pkg")) == 6


def test_a_repository_without_commits_is_measured_too(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q")
    assert changed(fresh, lambda: (fresh / "a.txt").write_text("1\n2\n")) == 2


def test_the_user_s_index_and_an_index_lock_the_agent_holds_are_left_alone(repo: Path) -> None:
    (repo / "staged.py").write_text("staged = True\n")
    git(repo, "add", "staged.py")
    index = repo / ".git" / "index"
    index_bytes = index.read_bytes()
    lock = repo / ".git" / "index.lock"
    lock.write_bytes(b"held by the agent")
    assert changed(repo, lambda: edit_three_lines(repo)) == 6
    assert index.read_bytes() == index_bytes
    assert lock.read_bytes() == b"held by the agent"
    lock.unlink()
    assert git(repo, "diff", "--cached", "--name-only") == "staged.py\n"


def test_outside_a_repository_nothing_changed_and_nothing_fails(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    before = worktree_state(plain)
    assert before == WorktreeState(tree=None)
    (plain / "a.txt").write_text("1\n2\n3\n")
    assert lines_changed(plain, before, worktree_state(plain)) == 0


def test_unknown_states_give_none(
    repo: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert lines_changed(repo, None, worktree_state(repo)) is None
    assert lines_changed(repo, worktree_state(repo), None) is None
    with caplog.at_level(logging.WARNING, logger="expeditor.usage.loc"):
        assert lines_changed(repo, worktree_state(repo), WorktreeState(tree="0" * 40)) is None
    assert "could not compare git trees" in caplog.text
    monkeypatch.setenv("PATH", str(repo / "no-such-bin"))
    assert worktree_state(repo) is None  # no git at all


def test_a_moved_file_counts_only_the_lines_it_changed(repo: Path) -> None:
    def move_and_edit() -> None:
        git(repo, "mv", "app.py", "service.py")
        (repo / "service.py").write_text(TEN_LINES.replace("line 0\n", "line zero\n"))

    assert changed(repo, move_and_edit) == 2


def test_measuring_adds_nothing_to_the_repository(repo: Path) -> None:
    objects = repo / ".git" / "objects"
    stored = sorted(path.name for path in objects.rglob("*") if path.is_file())
    before = worktree_state(repo)
    (repo / "new.py").write_text("print('new')\n")
    edit_three_lines(repo)
    assert lines_changed(repo, before, worktree_state(repo)) == 7
    assert sorted(path.name for path in objects.rglob("*") if path.is_file()) == stored
    assert _CACHE[0].is_dir()


def test_the_object_cache_is_emptied_once_a_day(repo: Path) -> None:
    (repo / "new.py").write_text("print('new')\n")
    worktree_state(repo)
    cache = _CACHE[0]
    written = [path for path in cache.rglob("*") if path.is_file() and path.name != "created"]
    assert written
    day_ago = time.time() - 2 * 86400
    os.utime(cache / "created", (day_ago, day_ago))
    (repo / "new.py").unlink()
    worktree_state(repo)
    assert not any(path.exists() for path in written)


def test_a_large_untracked_file_is_not_code_and_is_not_hashed(repo: Path) -> None:
    def write_data() -> None:
        (repo / "dump.csv").write_text("x,y\n" * (MAX_UNTRACKED_BYTES // 4 + 1))
        (repo / "small.py").write_text("a = 1\nb = 2\n")

    assert changed(repo, write_data) == 2


def test_a_home_set_inside_the_repository_is_not_counted(repo: Path) -> None:
    home = repo / ".expeditor"
    (home / "logs").mkdir(parents=True)

    def expeditor_writes() -> None:
        (home / "logs" / "expeditor.log").write_text(TEN_LINES)
        (home / "sessions.json").write_text("{}\n")

    before = loc.worktree_state(repo, _CACHE[0], (home,))
    expeditor_writes()
    assert lines_changed(repo, before, loc.worktree_state(repo, _CACHE[0], (home,))) == 0
    # Without the exclusion the same writes count: the exclusion is what keeps them out.
    (home / "logs" / "expeditor.log").write_text("")
    (home / "sessions.json").unlink()
    assert changed(repo, expeditor_writes) == 11


def test_an_excluded_directory_outside_the_repository_changes_nothing(repo: Path, tmp_path: Path) -> None:
    before = loc.worktree_state(repo, _CACHE[0], (tmp_path / "elsewhere", repo))
    (repo / "app.py").write_text(TEN_LINES + "more\n")
    assert lines_changed(repo, before, loc.worktree_state(repo, _CACHE[0], (tmp_path / "elsewhere", repo))) == 1
