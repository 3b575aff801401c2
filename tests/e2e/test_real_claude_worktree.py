"""The real Claude Code CLI working in a job's git worktree: its transcript is where expeditor watches, and
its edits land in the worktree, not in the user's checkout (issue 28, item 1)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from expeditor.claude_paths import transcript_path
from expeditor.config import Settings
from expeditor.executor import RunRequest, Termination
from expeditor.runs import build_executor
from expeditor.runs.worktrees import prepare_worktree
from tests.support.scripted_messages_api import Reply, ScriptedMessagesAPI, Text, ToolUse, Usage

pytestmark = [pytest.mark.real_claude, pytest.mark.anyio]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


async def test_a_real_session_in_a_job_worktree_is_watched_there_and_edits_only_it(
    settings: Settings, scripted_api: ScriptedMessagesAPI, claude_env: dict[str, str], tmp_path: Path
) -> None:
    repository = tmp_path / "project"
    repository.mkdir()
    git(repository, "init", "--quiet", "--initial-branch=main")
    (repository / "app.txt").write_text("one\n")
    git(repository, "add", "app.txt")
    git(repository, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet", "-m", "start")
    worktree = prepare_worktree(settings, repository, "camp", "job")
    write = {"file_path": str(worktree.path / "note.txt"), "content": "from the job\n"}
    scripted_api.add(Reply((Text("Writing."), ToolUse("Write", write)), Usage(10, 5)))
    scripted_api.add(Reply.text("Done.", Usage(10, 5)))
    session_id = str(uuid.uuid4())

    result = await build_executor(settings, env=claude_env).run(
        RunRequest(prompt="write the note", cwd=worktree.path, session_id=session_id, allowed_tools=("Write",)),
        marker_dir=None,
        caller_session_id=None,
    )

    assert result.termination is Termination.COMPLETED, result.reason
    assert result.result_text == "Done."
    # Claude Code keeps a worktree's transcript under the worktree's own path, where the watcher looks.
    assert result.transcript_path == transcript_path(settings.claude_config_dir, worktree.path, session_id)
    assert result.transcript_path is not None
    assert result.transcript_path.is_file()
    assert (worktree.path / "note.txt").read_text() == "from the job\n"
    assert not (repository / "note.txt").exists()
    assert git(repository, "status", "--porcelain") == ""
