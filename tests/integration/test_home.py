"""The default home, as a user meets it: real runs on the fake agent from a git repository in a temporary directory.

Nothing lands in the repository, the home and its files are private, expeditor's own files are no lines an agent
changed, and `status`/`report` say which home they read.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from expeditor.homes import default_home, make_private_dir
from expeditor.state import SqliteCampaignStore
from tests.support.fake import FAKE_AGENT_COMMAND

ONE_STEP = """\
name: one
description: one skill step that changes nothing
orchestrator: pipeline
steps:
  only: {skill: /only}
"""
ANSWER_OK = json.dumps({"steps": [{"assistant": "OK"}, {"result": {}}]})


def git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]
    return subprocess.run(["git", *identity, *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A user's project: a git repository with one commit, and a subdirectory to work from."""
    repo = tmp_path / "project"
    (repo / "src").mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "src" / "app.py").write_text("print('hello')\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "start")
    return repo


def environment(tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "EXPEDITOR_CLAUDE_COMMAND": FAKE_AGENT_COMMAND,
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
        "EXPEDITOR_FAKE_SCENARIO": ANSWER_OK,
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    env.pop("EXPEDITOR_HOME", None)
    return env


def expeditor(tmp_path: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "expeditor", *args],
        env=environment(tmp_path),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def home_of(tmp_path: Path, repo: Path) -> Path:
    """The home expeditor resolves for ``repo`` under this test's per-user state directory."""
    return default_home(repo, {"XDG_STATE_HOME": str(tmp_path / "state")})


def with_recipe(home: Path) -> None:
    make_private_dir(home / "recipes")
    (home / "recipes" / "one.yaml").write_text(ONE_STEP)
    (home / "recipes" / "one.yaml").chmod(0o600)


def report_lines(tmp_path: Path, cwd: Path, *home_args: str) -> int | None:
    done = expeditor(tmp_path, cwd, *home_args, "report", "c1", "--format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    [step] = report["steps"]
    loc_changed: int | None = step["loc_changed"]
    return loc_changed


def test_a_run_from_a_subdirectory_keeps_every_file_out_of_the_repository_and_private(
    tmp_path: Path, repo: Path
) -> None:
    done = expeditor(tmp_path, repo / "src", "run-skill", "/x", "--json")
    assert done.returncode == 0, done.stderr
    assert git(repo, "status", "--porcelain", "--ignored") == ""
    home = home_of(tmp_path, repo)
    assert home.is_relative_to(tmp_path / "state" / "expeditor")
    store = SqliteCampaignStore(home / "state.sqlite3")
    try:
        store.list("any")  # a reader open: the -wal and -shm exist now, with the database's mode
        modes = {
            path.relative_to(home).as_posix(): stat.S_IMODE(path.stat().st_mode)
            for path in [home, *home.rglob("*")]
            if "git-objects/" not in path.relative_to(home).as_posix()  # git's own, inside a 0700 directory
        }
    finally:
        store.close()
    assert {"state.sqlite3", "state.sqlite3.lock", "logs/expeditor.log", "sessions", "cache/git-objects"} <= set(modes)
    assert {name: mode for name, mode in modes.items() if (home / name).is_dir() and mode != 0o700} == {}
    assert {name: mode for name, mode in modes.items() if (home / name).is_file() and mode != 0o600} == {}
    assert stat.S_IMODE((tmp_path / "state" / "expeditor").stat().st_mode) == 0o700
    log = (home / "logs" / "expeditor.log").read_text()
    assert f"home: {home}" in log


def test_a_step_that_changes_nothing_reports_0_lines_and_leaves_git_status_empty(tmp_path: Path, repo: Path) -> None:
    with_recipe(home_of(tmp_path, repo))
    done = expeditor(tmp_path, repo / "src", "recipe", "run", "one", "--campaign", "c1", "--cwd", str(repo))
    assert done.returncode == 0, done.stdout + done.stderr
    assert git(repo, "status", "--porcelain", "--ignored") == ""
    assert report_lines(tmp_path, repo) == 0


def test_a_home_set_inside_the_repository_is_not_counted_as_lines_changed(tmp_path: Path, repo: Path) -> None:
    with_recipe(repo / ".expeditor")
    done = expeditor(
        tmp_path, repo, "--home", ".expeditor", "recipe", "run", "one", "--campaign", "c1", "--cwd", str(repo)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert git(repo, "status", "--porcelain") == "?? .expeditor/\n"  # it is there; it just does not count
    assert report_lines(tmp_path, repo, "--home", ".expeditor") == 0


def test_an_existing_dot_expeditor_home_keeps_being_used(tmp_path: Path, repo: Path) -> None:
    with_recipe(repo / ".expeditor")
    first = expeditor(tmp_path, repo, "--home", ".expeditor", "recipe", "run", "one", "--campaign", "c1")
    assert first.returncode == 0, first.stdout + first.stderr
    # No --home now, from a subdirectory: the records made there are still found.
    assert report_lines(tmp_path, repo / "src") == 0
    listed = expeditor(tmp_path, repo / "src", "status", "--campaign", "c1", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["home"] == str(repo / ".expeditor")
    assert not (tmp_path / "state").exists()


def test_status_and_report_where_nothing_has_run_say_which_home_and_create_none(tmp_path: Path, repo: Path) -> None:
    home = home_of(tmp_path, repo)
    status = expeditor(tmp_path, repo, "status")
    assert status.returncode == 1
    assert status.stdout == ""
    assert status.stderr == f"expeditor: nothing has run for this project: no home at {home}\n"
    report = expeditor(tmp_path, repo, "report", "c1")
    assert report.returncode == 1
    assert str(home) in report.stdout
    assert "nothing has run" in report.stdout
    assert not home.exists()


def test_status_names_an_unknown_campaign_and_the_home_and_prints_json(tmp_path: Path, repo: Path) -> None:
    home = home_of(tmp_path, repo)
    with_recipe(home)
    assert expeditor(tmp_path, repo, "recipe", "run", "one", "--campaign", "c1").returncode == 0
    unknown = expeditor(tmp_path, repo, "status", "--campaign", "c2")
    assert unknown.returncode == 1
    assert unknown.stderr == f"expeditor: no campaign 'c2' in {home / 'state.sqlite3'} (home {home})\n"
    shown = expeditor(tmp_path, repo, "status", "--campaign", "c1")
    assert shown.returncode == 0, shown.stderr
    assert f"Home: {home}" in shown.stdout
    assert "(1 job)" in shown.stdout
    listed = expeditor(tmp_path, repo, "status", "--campaign", "c1", "--json")
    assert listed.returncode == 0, listed.stderr
    snapshot = json.loads(listed.stdout)
    assert snapshot["home"] == str(home)
    assert snapshot["sessions"] == []
    assert [(record["name"], record["status"]) for record in snapshot["dispatches"]] == [("one", "success")]
    assert [step["step"] for step in snapshot["steps"]["one"]] == ["only"]
    both = expeditor(tmp_path, repo, "status", "--json", "--watch")
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr


def test_status_watch_into_a_pipe_prints_plain_snapshots_until_interrupted(tmp_path: Path, repo: Path) -> None:
    home = home_of(tmp_path, repo)
    make_private_dir(home)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "expeditor", "status", "--watch", "--interval", "0.05"],
        env=environment(tmp_path),
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        seen: list[str] = []
        while sum(line.startswith("Home: ") for line in seen) < 2:
            line = watcher.stdout.readline()
            assert line, "the watch ended before its second snapshot"
            seen.append(line)
        watcher.send_signal(signal.SIGINT)
        rest, errors = watcher.communicate(timeout=20)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0, errors
    assert "Live sessions (0)" in "".join(seen)
    assert "\x1b[" not in "".join(seen) + rest  # no cursor movement or colour: plain text
