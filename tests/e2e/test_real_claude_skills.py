"""The real Claude Code CLI, launched by the product's executor, expands expeditor's bundled skills."""

from __future__ import annotations

from pathlib import Path

import pytest

from expeditor.bundled import bundled_skills_dir
from expeditor.config import Settings
from expeditor.executor import RunRequest
from expeditor.runs import build_executor
from tests.support.scripted_messages_api import Reply, ScriptedMessagesAPI

pytestmark = [pytest.mark.anyio, pytest.mark.real_claude]

ARGUMENTS = "notes add a --json flag to `status`; keep $HOME literal"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = (tmp_path / "project").resolve()
    path.mkdir()
    return path


def skill_body(name: str) -> str:
    """The SKILL.md text after its front matter."""
    _, _, body = (bundled_skills_dir() / name / "SKILL.md").read_text(encoding="utf-8").split("---\n", 2)
    return body.strip()


async def test_a_namespaced_bundled_skill_reaches_the_model_with_its_arguments(
    settings: Settings, scripted_api: ScriptedMessagesAPI, claude_env: dict[str, str], workdir: Path
) -> None:
    scripted_api.add(Reply.text("plan_file=notes/plan.md"))
    executor = build_executor(settings, env=claude_env)

    result = await executor.run(
        RunRequest(prompt=f"/expeditor:make-plan {ARGUMENTS}", cwd=workdir),
        marker_dir=None,
        caller_session_id=None,
    )

    assert result.success, result.reason
    assert result.result_text == "plan_file=notes/plan.md"
    [request] = scripted_api.main_requests
    assert "<command-name>/expeditor:make-plan</command-name>" in request.text
    assert f"Base directory for this skill: {bundled_skills_dir() / 'make-plan'}" in request.text
    expanded = skill_body("make-plan").replace("$ARGUMENTS", ARGUMENTS)
    assert f"Arguments: {ARGUMENTS}\n" in expanded
    assert expanded in request.text
