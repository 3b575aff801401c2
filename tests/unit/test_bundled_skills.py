"""The skills that ship with expeditor: a Claude Code plugin every launched session gets with --plugin-dir."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import expeditor
from expeditor.bundled import bundled_plugin_dir, bundled_skills_dir
from expeditor.config import Settings, load_settings
from expeditor.executor import RunRequest, build_command
from expeditor.recipes import RecipeLibrary

# A bundled recipe names its skill by the plugin's namespace, which no user or project skill can shadow.
NAMESPACED_COMMAND = re.compile(r"/expeditor:([a-z0-9-]+)(?: |$)")


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    return load_settings(
        home=tmp_path / "home",
        claude_command="/opt/claude",
        claude_config_dir=tmp_path / "claude",
        allowed_roots=(tmp_path,),
        **overrides,
    )


def shipped_skills() -> set[str]:
    return {path.parent.name for path in bundled_skills_dir().glob("*/SKILL.md")}


def test_the_plugin_manifest_names_the_plugin_expeditor_at_the_package_version() -> None:
    manifest = json.loads((bundled_plugin_dir() / ".claude-plugin" / "plugin.json").read_text(encoding="utf-8"))
    assert manifest["name"] == "expeditor"
    assert manifest["version"] == expeditor.__version__
    assert len(manifest["description"]) > 40


def test_the_skills_directory_is_the_plugins() -> None:
    assert bundled_skills_dir() == bundled_plugin_dir() / "skills"
    assert "make-plan" in shipped_skills()


def test_every_command_of_a_bundled_recipe_names_a_skill_the_plugin_ships() -> None:
    library = RecipeLibrary()
    used: set[str] = set()
    for entry in library.entries():
        if entry.name == "demo":  # runs on the fake agent, whose /demo-* commands are no skills
            continue
        for step_name, step in library.load_entry(entry).steps.items():
            match = NAMESPACED_COMMAND.match(step.skill or "")
            assert match is not None, f"{entry.name}.{step_name}: {step.skill!r} is not /expeditor:<skill> ..."
            used.add(match.group(1))
    assert used == shipped_skills()


@pytest.mark.parametrize("name", sorted(shipped_skills()))
def test_each_skill_file_has_its_name_a_description_and_takes_arguments(name: str) -> None:
    text = (bundled_skills_dir() / name / "SKILL.md").read_text(encoding="utf-8")
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["name"] == name
    assert len(meta["description"]) > 40
    assert "$ARGUMENTS" in body


def test_every_launch_gets_the_bundled_plugin(tmp_path: Path) -> None:
    request = RunRequest(prompt="/expeditor:make-plan w go", cwd=tmp_path, allowed_tools=("Read", "Edit"))
    argv = build_command(make_settings(tmp_path), request, "sid", mcp_config=None)
    plugin = Path(argv[argv.index("--plugin-dir") + 1])
    assert plugin.is_absolute()
    assert (plugin / ".claude-plugin" / "plugin.json").is_file()
    assert (plugin / "skills" / "make-plan" / "SKILL.md").is_file()
    assert argv[-3:] == ["--allowedTools", "Read", "Edit"]


def test_without_bundled_skills_no_plugin_is_passed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, bundled_skills=False)
    argv = build_command(settings, RunRequest(prompt="go", cwd=tmp_path), "sid", mcp_config=None)
    assert "--plugin-dir" not in argv


def test_bundled_skills_is_on_by_default_and_the_environment_turns_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings(home=tmp_path).bundled_skills
    monkeypatch.setenv("EXPEDITOR_BUNDLED_SKILLS", "false")
    assert not load_settings(home=tmp_path).bundled_skills
