"""The README stays true: its settings table names every setting, and its first screen has the two commands."""

from __future__ import annotations

from pathlib import Path

from expeditor.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_settings_table_names_every_setting() -> None:
    text = README.read_text()
    table = text[text.index("## Settings") :]
    missing = [name for name in Settings.model_fields if f"`{name}`" not in table]
    assert missing == []


def test_the_first_screen_gives_the_install_and_demo_command_then_the_test_command() -> None:
    first_screen = "\n".join(README.read_text().splitlines()[:30])
    assert "pip install -e '.[test]' && .venv/bin/expeditor demo" in first_screen
    assert ".venv/bin/python -m pytest" in first_screen


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (README.parent / ".ci" / "run").read_text()
    assert "\n.venv/bin/python -m pytest\n" in ci
