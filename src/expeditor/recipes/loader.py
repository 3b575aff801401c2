"""Find recipes by name: bundled ones (package data) and project ones in ``<home>/recipes/``.

A project recipe overrides a bundled one of the same name. Names are checked before they
touch the file system, so ``../x`` or ``a/b`` never become paths.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import StrEnum
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from expeditor.config import Settings
from expeditor.recipes.problems import BrokenRecipe, RecipeProblem, UnknownRecipe
from expeditor.recipes.schema import Recipe, validate_recipe_name
from expeditor.recipes.validation import parse_recipe

__all__ = ["RecipeEntry", "RecipeLibrary", "RecipeSource"]

_SUFFIX = ".yaml"


class RecipeSource(StrEnum):
    BUNDLED = "bundled"
    PROJECT = "project"


@dataclass(frozen=True)
class RecipeEntry:
    """Where a recipe of a given name comes from; ``overrides_bundled`` for a project recipe shadowing one."""

    name: str
    source: RecipeSource
    location: str
    overrides_bundled: bool = False

    @property
    def source_label(self) -> str:
        return "project (overrides bundled)" if self.overrides_bundled else str(self.source)


def _bundled_root() -> Traversable:
    return files("expeditor.recipes").joinpath("bundled")


@dataclass(frozen=True)
class RecipeLibrary:
    """The recipes a server can dispatch: bundled ones and those in ``project_dir``."""

    project_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RecipeLibrary:
        return cls(settings.recipes_dir)

    def entries(self) -> list[RecipeEntry]:
        """Every available recipe, by name; a project recipe replaces a bundled one of its name."""
        bundled = {
            item.name.removesuffix(_SUFFIX): RecipeEntry(
                item.name.removesuffix(_SUFFIX), RecipeSource.BUNDLED, str(item)
            )
            for item in _bundled_root().iterdir()
            if item.name.endswith(_SUFFIX) and item.is_file()
        }
        found = dict(bundled)
        for path in self._project_files():
            name = path.name.removesuffix(_SUFFIX)
            found[name] = RecipeEntry(name, RecipeSource.PROJECT, str(path), overrides_bundled=name in bundled)
        return [found[name] for name in sorted(found)]

    def _project_files(self) -> list[Path]:
        if self.project_dir is None or not self.project_dir.is_dir():
            return []
        try:
            return sorted(path for path in self.project_dir.iterdir() if path.name.endswith(_SUFFIX) and path.is_file())
        except OSError as exc:
            raise BrokenRecipe(f"cannot list project recipes in {self.project_dir}: {exc}") from exc

    def find(self, name: str) -> RecipeEntry:
        """The entry for ``name``; UnknownRecipe listing the available names when there is none."""
        validate_recipe_name(name)
        entries = {entry.name: entry for entry in self.entries()}
        if name in entries:
            return entries[name]
        close = difflib.get_close_matches(name, list(entries), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        available = ", ".join(entries) or "none"
        raise UnknownRecipe(f"no recipe named {name!r}{hint} (available: {available})")

    def read_text(self, entry: RecipeEntry) -> str:
        """The YAML text of ``entry``."""
        try:
            if entry.source is RecipeSource.BUNDLED:
                return _bundled_root().joinpath(entry.name + _SUFFIX).read_text(encoding="utf-8")
            return Path(entry.location).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problem = RecipeProblem(entry.location, None, (), f"cannot be read: {exc}")
            raise BrokenRecipe.from_problems(entry.location, [problem]) from exc

    def load(self, name: str) -> Recipe:
        """The validated recipe called ``name``; UnknownRecipe or BrokenRecipe if it cannot be had."""
        entry = self.find(name)
        return self.load_entry(entry)

    def load_entry(self, entry: RecipeEntry) -> Recipe:
        return parse_recipe(self.read_text(entry), source=entry.location, expected_name=entry.name)
