"""Settings from ``<home>/config.yaml``: the lowest-priority source, below the environment and CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from expeditor.errors import InvalidInput
from expeditor.homes import CONFIG_FILE_NAME, default_home

__all__ = ["YamlFileSource", "home_from"]


class YamlFileSource(PydanticBaseSettingsSource):
    """Lowest-priority source: ``<home>/config.yaml`` when it exists."""

    def __init__(self, settings_cls: type[BaseSettings], home: Path) -> None:
        super().__init__(settings_cls)
        self._path = home / CONFIG_FILE_NAME

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if not self._path.is_file():
            return {}
        try:
            loaded = yaml.safe_load(self._path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidInput(f"{self._path}: cannot read settings: {exc}") from exc
        if loaded is None:
            return {}
        if not isinstance(loaded, dict):
            raise InvalidInput(f"{self._path}: expected a mapping of setting names to values")
        return {str(key): value for key, value in loaded.items()}


def home_from(*sources: dict[str, Any]) -> Path:
    """The home the first source names, else the default home of the working directory's project."""
    for source in sources:
        if source.get("home") is not None:
            return Path(source["home"]).expanduser().absolute()
    return default_home()
