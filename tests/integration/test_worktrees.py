"""Jobs in git worktrees of their own: real git, real processes, the fake agent (issue 28, item 1)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from mcp import Client

from expeditor.config import Settings
from expeditor.errors import InvalidInput
from expeditor.homes import worktrees_root
from expeditor.reports import UsageReport, campaign_report, render_markdown
from expeditor.runs.worktrees import finish_worktree, prepare_worktree, repository_of
from expeditor.server.app import build_server
from expeditor.state import SqliteCampaignStore
from expeditor.status import show_status
from expeditor.testing import read_invocation_log
from expeditor.worktree_commands import list_worktrees
from tests.support.fake import FAKE_AGENT_COMMAND, fake_settings

ORIGINAL = "alpha\nbeta\ngamma\n"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def make_repository(path: Path) -> str:
    """A repository with one commit holding app.txt; returns its HEAD."""
    path.mkdir(parents=True)
    git(path, "init", "--quiet", "--initial-branch=main")
    (path / "app.txt").write_text(ORIGINAL)
    git(path, "add", "app.txt")
    git(path, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet", "-m", "start")
    return git(path, "rev-parse", "HEAD")


def scenario(*steps: dict[str, Any]) -> str:
    return json.dumps({"steps": list(steps)})


def changed_files(repository: Path, base: str, branch: str) -> list[str]:
    return git(repository, "diff", "--name-only", base, branch).splitlines()


# --- two jobs at once ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_two_implementation_jobs_at_once_each_finish_on_their_own_branch(tmp_path: Path) -> None:
    repository = tmp_path / "project"
    head = make_repository(repository)
    # The worktree root (under the home) is outside the allowed roots: it is expeditor's own.
    settings = fake_settings(tmp_path, allowed_roots=(repository,))
    edits = {"first": "alpha\nFIRST\ngamma\n", "second": "alpha\nbeta\ngamma\nSECOND\nMORE\n"}
    env = {**os.environ, "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log")}
    outcomes: dict[str, dict[str, Any]] = {}
    async with Client(build_server(settings, env=env)) as client:

        async def dispatch(job: str) -> None:
            # The orchestrator (the fake agent) edits the file itself; its scenario rides in the task.
            task = scenario({"write_file": {"path": "app.txt", "text": edits[job]}}, {"result": f"{job} done"})
            arguments = {"campaign": "camp", "name": job, "recipe": "implementation", "inputs": {"task": task}}
            result = await client.call_tool("dispatch", {**arguments, "cwd": str(repository)})
            assert result.structured_content is not None
            outcomes[job] = result.structured_content

        async with anyio.create_task_group() as group:
            for job in edits:
                group.start_soon(dispatch, job)
        shown = await client.call_tool("get_dispatch", {"campaign": "camp", "name": "first"})
        shown_text = shown.content[0].text  # type: ignore[union-attr]

    launches = [entry for entry in read_invocation_log(tmp_path / "agent.log") if entry["event"] == "launch"]
    assert len({entry["cwd"] for entry in launches}) == 2
    for job, text in edits.items():
        outcome = outcomes[job]
        assert outcome["status"] == "success", outcome["message"]
        branch = f"expeditor/camp/{job}"
        assert outcome["branch"] == branch
        assert not Path(outcome["worktree"]).exists(), "a succeeded job's worktree is removed"
        assert f"branch {branch} holds its commits" in outcome["message"]
        # The branch holds this job's change and nothing else.
        assert changed_files(repository, head, branch) == ["app.txt"]
        assert git(repository, "show", f"{branch}:app.txt") + "\n" == text
        assert any(entry["cwd"] == outcome["worktree"] for entry in launches)
    assert f"branch expeditor/camp/first, worktree {outcomes['first']['worktree']}" in shown_text
    # The user's checkout is untouched.
    assert git(repository, "status", "--porcelain") == ""
    assert git(repository, "rev-parse", "HEAD") == head
    assert (repository / "app.txt").read_text() == ORIGINAL
    # Each job's lines changed are its own: 1 removed + 1 added, and 2 added.
    loc = {job: campaign_report_of(settings, "camp", job).efficiency_total.loc_changed for job in edits}
    assert loc == {"first": 2, "second": 2}
    # The report and status show where each job's commits are.
    report = campaign_report_of(settings, "camp")
    assert [(row.job_name, row.branch) for row in report.branches] == [(job, f"expeditor/camp/{job}") for job in edits]
    assert "## Job Branches" in render_markdown(report)
    shown_status = io.StringIO()
    assert show_status(settings, campaign="camp", watch=False, interval=1, out=shown_status) == 0
    assert "expeditor/camp/second" in shown_status.getvalue()


def campaign_report_of(settings: Settings, campaign: str, job: str | None = None) -> UsageReport:
    store = SqliteCampaignStore(settings.state_path)
    try:
        return campaign_report(store, campaign, job)
    finally:
        store.close()


# --- a pipeline killed mid-step --------------------------------------------------------------

ISOLATED_PIPELINE = """\
name: isolated
description: three skill steps in a worktree of the job's own
orchestrator: pipeline
isolation: worktree
steps:
  one: {skill: /one}
  two: {skill: /two}
  three: {skill: /three}
"""


def _cli_env(tmp_path: Path, roots: Path) -> dict[str, str]:
    return {
        **os.environ,
        "EXPEDITOR_HOME": str(tmp_path / "home"),
        "EXPEDITOR_CLAUDE_COMMAND": FAKE_AGENT_COMMAND,
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(roots),
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
        "EXPEDITOR_FAKE_SCENARIO_DIR": str(tmp_path / "scenarios"),
    }


def _launches(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "agent.log"
    if not log.exists():
        return []
    return [entry for entry in read_invocation_log(log) if entry["event"] == "launch"]


def _prompt(entry: dict[str, Any]) -> str:
    argv: list[str] = entry["argv"]
    return argv[argv.index("-p") + 1]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_a_pipeline_sigkilled_mid_step_resumes_in_the_same_worktree(tmp_path: Path) -> None:
    repository = tmp_path / "project"
    head = make_repository(repository)
    (tmp_path / "home" / "recipes").mkdir(parents=True)
    (tmp_path / "home" / "recipes" / "isolated.yaml").write_text(ISOLATED_PIPELINE)
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "one.json").write_text(scenario({"write_file": {"path": "one.txt", "text": "1\n"}}, {"result": "a"}))
    (scenarios / "two.json").write_text(scenario({"write_file": {"path": "two.txt", "text": "2\n"}}, {"result": "b"}))
    (scenarios / "three.json").write_text(scenario({"assistant": "working"}, {"hang": True}))
    env = _cli_env(tmp_path, repository)
    command = [sys.executable, "-m", "expeditor", "recipe", "run", "isolated", "--campaign", "c", "--job", "job"]
    runner = subprocess.Popen(
        [*command, "--cwd", str(repository)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        # Another process's progress: there is no event to wait on, only its log.
        while not any(_prompt(entry) == "/three" for entry in _launches(tmp_path)):
            assert time.monotonic() < deadline, "step three never started"
            assert runner.poll() is None, "the runner ended before step three"
            time.sleep(0.05)
    finally:
        runner.kill()
        runner.wait()
    first_launches = _launches(tmp_path)
    worktree = Path(first_launches[0]["cwd"])
    assert {entry["cwd"] for entry in first_launches} == {str(worktree)}
    assert worktree.is_relative_to(worktrees_root(tmp_path / "home"))
    deadline = time.monotonic() + 10
    while any(_alive(entry["pid"]) for entry in first_launches):
        assert time.monotonic() < deadline, "a step outlived its runner"
        time.sleep(0.05)

    (scenarios / "three.json").write_text(
        scenario({"write_file": {"path": "three.txt", "text": "3\n"}}, {"result": "c"})
    )
    again = subprocess.run([*command, "--cwd", str(repository)], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    launches = _launches(tmp_path)
    # Steps one and two were replayed, not run again; the rerun of three ran in the same worktree,
    # where the first steps' files still were: the branch holds all three.
    assert [_prompt(entry) for entry in launches] == ["/one", "/two", "/three", "/three"]
    assert launches[-1]["cwd"] == str(worktree)
    assert sorted(changed_files(repository, head, "expeditor/c/job")) == ["one.txt", "three.txt", "two.txt"]
    assert "branch expeditor/c/job holds its commits" in again.stdout
    assert not worktree.exists()
    assert git(repository, "status", "--porcelain") == ""
    store = SqliteCampaignStore(tmp_path / "home" / "state.sqlite3")
    try:
        record = store.get("c", "job")
    finally:
        store.close()
    assert record is not None
    assert (record.status.value, record.attempts, record.worktree) == ("success", 2, str(worktree))


# --- refusals ----------------------------------------------------------------------------------

PLAIN_PIPELINE = """\
name: plain
description: one step that fails after writing a file
orchestrator: pipeline
steps:
  only: {skill: /only}
"""


def _dispatch_cli(tmp_path: Path, cwd: Path, roots: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "expeditor", "dispatch", "c", "job", "--recipe", "plain", "--cwd", str(cwd)]
    return subprocess.run([*command, *extra], env=_cli_env(tmp_path, roots), capture_output=True, text=True, timeout=60)


def test_isolation_outside_a_git_repository_is_refused_clearly_and_nothing_is_recorded(tmp_path: Path) -> None:
    (tmp_path / "home" / "recipes").mkdir(parents=True)
    (tmp_path / "home" / "recipes" / "plain.yaml").write_text(PLAIN_PIPELINE)
    plain = tmp_path / "plain"
    plain.mkdir()
    refused = _dispatch_cli(tmp_path, plain, tmp_path, "--isolation", "worktree")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"expeditor: isolation 'worktree' needs a git repository, and {plain} is not in one: "
        "run `git init` and commit there, or dispatch without isolation"
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "--quiet")
    with pytest.raises(InvalidInput, match="has no commit yet: commit once, or dispatch without isolation"):
        repository_of(empty)
    assert not _launches(tmp_path)
    assert not (tmp_path / "home" / "state.sqlite3").exists() or _no_record(tmp_path)


@pytest.mark.anyio
async def test_the_dispatch_tool_takes_isolation_from_the_recipe_unless_told_otherwise(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    settings = fake_settings(tmp_path)
    write = scenario({"write_file": {"path": "app.txt", "text": "edited in place\n"}}, {"result": "done"})
    job = {"campaign": "c", "recipe": "implementation", "inputs": {"task": write}, "cwd": str(plain)}
    async with Client(build_server(settings, env=dict(os.environ))) as client:
        refused = await client.call_tool("dispatch", {**job, "name": "isolated"})
        in_place = await client.call_tool("dispatch", {**job, "name": "in-place", "isolation": "none"})
    # The bundled implementation recipe isolates its jobs: outside a repository that is refused.
    assert refused.is_error
    assert "isolation 'worktree' needs a git repository" in refused.content[0].text  # type: ignore[union-attr]
    assert in_place.structured_content is not None
    assert in_place.structured_content["status"] == "success", in_place.structured_content["message"]
    assert in_place.structured_content["branch"] is None
    assert (plain / "app.txt").read_text() == "edited in place\n"


def _no_record(tmp_path: Path) -> bool:
    store = SqliteCampaignStore(tmp_path / "home" / "state.sqlite3")
    try:
        return store.get("c", "job") is None
    finally:
        store.close()


def test_the_project_must_be_inside_the_allowed_roots_but_the_worktree_root_need_not(tmp_path: Path) -> None:
    inside, outside = tmp_path / "roots" / "project", tmp_path / "elsewhere"
    make_repository(inside)
    make_repository(outside)
    settings = fake_settings(tmp_path, allowed_roots=(tmp_path / "roots",))
    with pytest.raises(InvalidInput, match="outside the allowed roots"):
        prepare_worktree(settings, outside, "c", "job")
    made = prepare_worktree(settings, inside, "c", "job")
    assert not any(made.path.is_relative_to(root) for root in settings.allowed_roots)
    # A worktree is never a project of its own: none is made from one.
    with pytest.raises(InvalidInput, match="outside the allowed roots"):
        prepare_worktree(settings, made.path, "c", "other")


# --- a failed job keeps its worktree; prune ----------------------------------------------------


def test_a_failed_job_keeps_its_worktree_until_prune_which_keeps_its_work_on_the_branch(tmp_path: Path) -> None:
    repository = tmp_path / "project"
    head = make_repository(repository)
    (tmp_path / "home" / "recipes").mkdir(parents=True)
    (tmp_path / "home" / "recipes" / "plain.yaml").write_text(PLAIN_PIPELINE)
    (tmp_path / "scenarios").mkdir()
    failing = scenario({"write_file": {"path": "half.txt", "text": "half done\n"}}, {"result": {"is_error": True}})
    (tmp_path / "scenarios" / "only.json").write_text(failing)
    failed = _dispatch_cli(tmp_path, repository, repository, "--isolation", "worktree")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "are kept for inspection" in failed.stdout
    [entry] = list_worktrees(fake_settings(tmp_path, allowed_roots=(repository,)))
    assert (entry.campaign, entry.job, entry.state, entry.branch) == ("c", "job", "failure", "expeditor/c/job")
    assert (Path(entry.path) / "half.txt").read_text() == "half done\n"

    env = _cli_env(tmp_path, repository)
    pruned = subprocess.run(
        [sys.executable, "-m", "expeditor", "worktrees", "prune"], env=env, capture_output=True, text=True, timeout=30
    )
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert pruned.stdout.splitlines()[-1] == "1 worktree(s) removed"
    assert not Path(entry.path).exists()
    assert changed_files(repository, head, "expeditor/c/job") == ["half.txt"]
    assert git(repository, "worktree", "list", "--porcelain").count("worktree ") == 1


# --- two preparers racing ------------------------------------------------------------------------


# Each preparer is blocked reading its input until every one is started, then all are released at once.
PREPARER = """\
import sys
from pathlib import Path
from expeditor.config import load_settings
from expeditor.runs.worktrees import finish_worktree, prepare_worktree, repository_of
home, roots, project = sys.argv[1:]
settings = load_settings(home=Path(home), allowed_roots=(Path(roots),))
sys.stdin.readline()
print(prepare_worktree(settings, Path(project), "c", "job").path)
"""


def test_processes_preparing_one_job_at_once_end_with_one_worktree(tmp_path: Path) -> None:
    repository = tmp_path / "project"
    make_repository(repository)
    argv = [sys.executable, "-c", PREPARER, str(tmp_path / "home"), str(repository), str(repository)]
    preparers = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for process in preparers:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    answers = [process.communicate(timeout=60) for process in preparers]
    assert [process.returncode for process in preparers] == [0, 0], answers
    assert len({out.strip() for out, _ in answers}) == 1
    listed = git(repository, "worktree", "list", "--porcelain")
    assert listed.count("worktree ") == 2  # the checkout and the job's one
    assert git(repository, "for-each-ref", "--format=%(refname:short)", "refs/heads/expeditor") == "expeditor/c/job"


def test_a_recipe_may_keep_a_succeeded_job_s_worktree_and_a_failed_job_keeps_it_untouched(tmp_path: Path) -> None:
    repository = tmp_path / "project"
    head = make_repository(repository)
    settings = fake_settings(tmp_path, allowed_roots=(repository,))
    failed = prepare_worktree(settings, repository, "c", "failed")
    (failed.path / "draft.txt").write_text("draft\n")
    said = finish_worktree(failed, succeeded=False, keep=False, job="c/failed")
    assert said.endswith("are kept for inspection")
    assert git(failed.path, "status", "--porcelain") == "?? draft.txt"
    assert git(repository, "rev-parse", failed.branch) == head

    kept = prepare_worktree(settings, repository, "c", "kept")
    (kept.path / "app.txt").write_text("changed\n")
    said = finish_worktree(kept, succeeded=True, keep=True, job="c/kept")
    assert said.endswith(f"its uncommitted changes were committed to it; its worktree {kept.path} is kept")
    assert git(kept.path, "status", "--porcelain") == ""
    assert changed_files(repository, head, kept.branch) == ["app.txt"]
    # The next launch of the job finds the same worktree again.
    assert prepare_worktree(settings, repository, "c", "kept") == kept


def test_a_job_of_a_subdirectory_works_in_that_subdirectory_of_its_worktree(tmp_path: Path) -> None:
    # A monorepo's service: its job must not run at the repository's top level instead.
    repository = tmp_path / "project"
    make_repository(repository)
    service = repository / "service"
    service.mkdir()
    (service / "main.txt").write_text("service\n")
    git(repository, "add", "service")
    git(repository, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet", "-m", "service")
    head = git(repository, "rev-parse", "HEAD")
    (tmp_path / "home" / "recipes").mkdir(parents=True)
    (tmp_path / "home" / "recipes" / "plain.yaml").write_text(PLAIN_PIPELINE)
    (tmp_path / "scenarios").mkdir()
    writes = scenario({"write_file": {"path": "new.txt", "text": "new\n"}}, {"result": "done"})
    (tmp_path / "scenarios" / "only.json").write_text(writes)

    done = _dispatch_cli(tmp_path, service, repository, "--isolation", "worktree")

    assert done.returncode == 0, done.stdout + done.stderr
    [launch] = _launches(tmp_path)
    assert Path(launch["cwd"]).relative_to(worktrees_root(tmp_path / "home")).parts[-3:] == ("c", "job", "service")
    assert changed_files(repository, head, "expeditor/c/job") == ["service/new.txt"]
    # The same from `recipe run` of a recipe that asks for isolation itself.
    (tmp_path / "home" / "recipes" / "plain.yaml").write_text(PLAIN_PIPELINE + "isolation: worktree\n")
    command = [sys.executable, "-m", "expeditor", "recipe", "run", "plain", "--campaign", "c", "--job", "run"]
    ran = subprocess.run(
        [*command, "--cwd", str(service)],
        env=_cli_env(tmp_path, repository),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert Path(_launches(tmp_path)[-1]["cwd"]).parts[-3:] == ("c", "run", "service")
    assert changed_files(repository, head, "expeditor/c/run") == ["service/new.txt"]
    assert git(repository, "status", "--porcelain") == ""
