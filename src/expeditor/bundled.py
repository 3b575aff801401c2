"""The Claude Code plugin that ships inside the package: its skills, as a directory every session can be given."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from expeditor.errors import LaunchFailed

__all__ = ["bundled_plugin_dir", "bundled_skills_dir"]

_PLUGIN_MANIFEST = Path(".claude-plugin", "plugin.json")


def bundled_plugin_dir() -> Path:
    """The Claude Code plugin that ships with expeditor: ``.claude-plugin/plugin.json`` and ``skills/``.

    Every launched session gets it with ``--plugin-dir`` (setting ``bundled_skills``), so its skills answer
    to ``/expeditor:<name>``, which no user or project skill can shadow (docs/claude-code-cli-notes.md,
    "Bundled skills"). A directory on disk, also when expeditor is installed from a wheel.
    """
    plugin = files("expeditor").joinpath("plugin")
    if not isinstance(plugin, Path) or not plugin.joinpath(_PLUGIN_MANIFEST).is_file():
        raise LaunchFailed(f"the bundled plugin is not a directory on disk ({plugin}): reinstall expeditor")
    return plugin


def bundled_skills_dir() -> Path:
    """The directory holding ``<skill-name>/SKILL.md`` for the bundled recipes' steps (in the bundled plugin)."""
    return bundled_plugin_dir() / "skills"
