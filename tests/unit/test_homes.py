"""Where a project's home is, on real git repositories in temporary directories, and how it is created."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from expeditor.config import load_settings
from expeditor.homes import (
    create_private_file,
    default_home,
    describe_home,
    home_for_project,
    make_private_dir,
    project_root,
    state_base,
)


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own per-user state directory, and no EXPEDITOR_HOME from outside."""
    base = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(base))
    monkeypatch.delenv("EXPEDITOR_HOME", raising=False)
    return base / "expeditor"


def test_a_subdirectory_of_a_repository_has_the_repository_s_home(tmp_path: Path, state: Path) -> None:
    repo = git_repo(tmp_path / "shop")
    (repo / "src" / "deep").mkdir(parents=True)
    home = default_home(repo)
    assert default_home(repo / "src" / "deep") == home
    assert home.parent == state
    assert home.name.startswith("shop-")
    assert len(home.name) == len("shop-") + 12


def test_two_repositories_of_the_same_name_get_two_homes(tmp_path: Path, state: Path) -> None:
    first, second = git_repo(tmp_path / "a" / "app"), git_repo(tmp_path / "b" / "app")
    assert default_home(first) != default_home(second)
    assert {default_home(first).parent, default_home(second).parent} == {state}


def test_outside_a_repository_the_directory_itself_is_the_project(tmp_path: Path, state: Path) -> None:
    plain = tmp_path / "notes"
    (plain / "inner").mkdir(parents=True)
    assert project_root(plain / "inner") == (plain / "inner").resolve()
    assert default_home(plain) == home_for_project(plain.resolve(), state)
    assert default_home(plain / "inner") != default_home(plain)


def test_a_symlinked_path_to_a_project_meets_the_same_home(tmp_path: Path, state: Path) -> None:
    repo = git_repo(tmp_path / "real")
    (tmp_path / "link").symlink_to(repo)
    assert default_home(tmp_path / "link") == default_home(repo)


def test_the_state_base_follows_xdg_and_ignores_a_relative_value(tmp_path: Path) -> None:
    user = tmp_path / "user"
    assert state_base({"XDG_STATE_HOME": str(tmp_path / "xdg")}, user) == tmp_path / "xdg" / "expeditor"
    assert state_base({"XDG_STATE_HOME": "relative/state"}, user) == user / ".local" / "state" / "expeditor"
    assert state_base({}, user) == user / ".local" / "state" / "expeditor"


def test_a_name_that_is_not_readable_still_makes_a_home_name(tmp_path: Path) -> None:
    assert home_for_project(Path("/"), tmp_path).name.startswith("root-")
    assert home_for_project(Path("/srv/my project!"), tmp_path).name.startswith("my-project-")


def test_settings_default_to_the_project_home_and_read_its_config(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = git_repo(tmp_path / "proj")
    (repo / "pkg").mkdir()
    monkeypatch.chdir(repo / "pkg")
    home = default_home(repo)
    make_private_dir(home)
    (home / "config.yaml").write_text("stale_threshold: 77\n")
    settings = load_settings()
    assert settings.home == home
    assert settings.stale_threshold == 77
    assert not (repo / ".expeditor").exists()


def test_home_and_expeditor_home_override_the_default(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = git_repo(tmp_path / "proj")
    monkeypatch.chdir(repo)
    monkeypatch.setenv("EXPEDITOR_HOME", str(tmp_path / "from-env"))
    assert load_settings().home == tmp_path / "from-env"
    assert load_settings(home=tmp_path / "from-flag").home == tmp_path / "from-flag"
    monkeypatch.delenv("EXPEDITOR_HOME")
    assert load_settings().home == default_home(repo)


def test_an_empty_expeditor_home_is_unset_not_the_working_directory(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = git_repo(tmp_path / "proj")
    monkeypatch.chdir(repo)
    monkeypatch.setenv("EXPEDITOR_HOME", "")
    monkeypatch.setenv("EXPEDITOR_MARKER_DIR", "")
    settings = load_settings()
    assert settings.home == default_home(repo)
    assert settings.marker_dir == default_home(repo) / "markers"


def test_an_existing_dot_expeditor_home_is_still_found(tmp_path: Path, state: Path) -> None:
    repo = git_repo(tmp_path / "proj")
    (repo / "sub").mkdir()
    legacy = repo / ".expeditor"
    legacy.mkdir()
    (legacy / "state.sqlite3").write_bytes(b"")
    assert default_home(repo) == legacy
    assert default_home(repo / "sub") == legacy  # where earlier versions put it: the top level, found from below
    assert "found" not in describe_home(default_home(tmp_path / "elsewhere"))
    assert "in the project" in describe_home(legacy)


def test_a_dot_expeditor_of_notes_alone_is_not_taken_for_a_home(tmp_path: Path, state: Path) -> None:
    repo = git_repo(tmp_path / "proj")
    (repo / ".expeditor" / "work").mkdir(parents=True)  # a recipe's work_dir, not a home
    assert default_home(repo).parent == state


def test_private_directories_are_0700_with_their_missing_parents_and_files_0600(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    leaf = make_private_dir(existing / "home" / "logs")
    assert mode(leaf) == mode(leaf.parent) == 0o700
    assert mode(existing) == 0o755  # an existing directory keeps its mode
    target = leaf / "expeditor.log"
    assert create_private_file(target)
    assert mode(target) == 0o600
    target.write_text("kept\n")
    assert not create_private_file(target)
    assert target.read_text() == "kept\n"
    # Done without touching the umask: files the agents write in the user's project keep theirs.
    assert os.umask(umask) == umask
