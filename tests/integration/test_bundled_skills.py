"""A session started the way the executor starts it finds expeditor's bundled skills: the fake agent's view."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

from expeditor.bundled import bundled_plugin_dir, bundled_skills_dir
from expeditor.executor import ClaudeCodeExecutor, RunRequest
from expeditor.runs import build_executor
from expeditor.testing import read_invocation_log
from tests.support.fake import fake_settings

pytestmark = pytest.mark.anyio


def write_skill(skills: Path, name: str) -> None:
    (skills / name).mkdir(parents=True)
    (skills / name / "SKILL.md").write_text(f"---\nname: {name}\ndescription: d\n---\nRun $ARGUMENTS\n")


async def init_event(executor: ClaudeCodeExecutor, request: RunRequest) -> dict[str, Any]:
    """The ``system/init`` event of a session launched with exactly the executor's argv, env and cwd."""
    spec, _ = executor.prepare(request, marker_dir=None, caller_session_id=None)
    with anyio.fail_after(20):
        done = await anyio.run_process(spec.argv, cwd=spec.cwd, env=spec.env, stdin=subprocess.DEVNULL)
    first = json.loads(done.stdout.decode().splitlines()[0])
    assert (first["type"], first["subtype"]) == ("system", "init")
    return first


async def test_every_session_the_executor_runs_is_given_the_bundled_plugin(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    executor = build_executor(fake_settings(tmp_path))
    request = RunRequest(
        prompt="/expeditor:make-plan notes add a flag", cwd=tmp_path, env={"EXPEDITOR_FAKE_LOG": str(log)}
    )

    result = await executor.run(request, marker_dir=None, caller_session_id=None)

    assert result.success, result.reason
    (launch,) = [entry for entry in read_invocation_log(log) if entry["event"] == "launch"]
    argv: list[str] = launch["argv"]
    plugin = Path(argv[argv.index("--plugin-dir") + 1])
    assert json.loads((plugin / ".claude-plugin" / "plugin.json").read_text())["name"] == "expeditor"
    assert (plugin / "skills" / "make-plan" / "SKILL.md").is_file()


async def test_the_session_lists_the_bundled_skills_in_the_expeditor_namespace(tmp_path: Path) -> None:
    init = await init_event(build_executor(fake_settings(tmp_path)), RunRequest(prompt="hi", cwd=tmp_path))

    shipped = sorted(path.parent.name for path in bundled_skills_dir().glob("*/SKILL.md"))
    assert init["skills"] == [f"expeditor:{name}" for name in shipped]
    assert "expeditor:make-plan" in init["slash_commands"]
    assert init["plugins"] == [{"name": "expeditor", "path": str(bundled_plugin_dir())}]


async def test_project_skills_keep_their_names_beside_the_namespaced_bundled_ones(tmp_path: Path) -> None:
    write_skill(tmp_path / ".claude" / "skills", "make-plan")
    other = tmp_path / "lint-tools"  # a plugin without a manifest is named after its directory
    write_skill(other / "skills", "lint")
    request = RunRequest(prompt="hi", cwd=tmp_path, extra_args=("--plugin-dir", str(other)))

    init = await init_event(build_executor(fake_settings(tmp_path)), request)

    assert init["skills"][0] == "make-plan"
    assert "expeditor:make-plan" in init["skills"]
    assert init["skills"][-1] == "lint-tools:lint"
    assert [plugin["name"] for plugin in init["plugins"]] == ["expeditor", "lint-tools"]


async def test_with_bundled_skills_off_the_session_finds_none_of_them(tmp_path: Path) -> None:
    executor = build_executor(fake_settings(tmp_path, bundled_skills=False))
    spec, _ = executor.prepare(RunRequest(prompt="hi", cwd=tmp_path), marker_dir=None, caller_session_id=None)
    assert "--plugin-dir" not in spec.argv

    init = await init_event(executor, RunRequest(prompt="hi", cwd=tmp_path))

    assert (init["skills"], init["plugins"]) == ([], [])
