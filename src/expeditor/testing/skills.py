"""The skills a fake session finds, named as Claude Code's init event names them."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["skills_found"]


def _plugin_name(plugin: Path) -> str:
    """The ``name`` in ``.claude-plugin/plugin.json``, else the directory's name, as Claude Code names a plugin."""
    try:
        name = json.loads((plugin / ".claude-plugin" / "plugin.json").read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        name = None
    return name if isinstance(name, str) and name else plugin.name


def _skills_in(directory: Path) -> list[str]:
    return sorted(skill.parent.name for skill in directory.glob("*/SKILL.md"))


def skills_found(cwd: str, plugin_dirs: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    """The skills a session finds, named as Claude Code's init event names them, and the plugins they come from.

    ``<cwd>/.claude/skills/<name>/SKILL.md`` is ``<name>``; ``skills/<name>/SKILL.md`` of a ``--plugin-dir``
    is ``<plugin>:<name>`` (docs/claude-code-cli-notes.md, section a).
    """
    skills = _skills_in(Path(cwd, ".claude", "skills"))
    plugins: list[dict[str, str]] = []
    for directory in plugin_dirs:
        plugin = Path(cwd, directory)
        if not plugin.is_dir():
            continue
        name = _plugin_name(plugin)
        plugins.append({"name": name, "path": str(plugin)})
        skills += [f"{name}:{skill}" for skill in _skills_in(plugin / "skills")]
    return skills, plugins
