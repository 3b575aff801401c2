"""End-to-end fixtures: the real Claude Code CLI and the scripted Messages API it talks to offline."""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator
from pathlib import Path

import pytest

from expeditor.config import Settings, load_settings
from tests.support.scripted_messages_api import ScriptedMessagesAPI, offline_cli_env

REPO_ROOT = Path(__file__).resolve().parents[2]
PINNED_CLAUDE = REPO_ROOT / ".ci" / "cache" / "claude" / "node_modules" / ".bin" / "claude"
MISSING_CLAUDE = "real Claude Code CLI not found: set EXPEDITOR_TEST_CLAUDE or run .ci/run"
# Kept from our environment for the CLI: what a shell and Node need, and the leak guard's tag.
_KEPT_ENV = ("PATH", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "EXPEDITOR_TEST_TAG")


def find_claude_cli() -> Path | None:
    """``EXPEDITOR_TEST_CLAUDE``, else ``claude`` on PATH, else the CLI that ``.ci/run`` pins."""
    named = os.environ.get("EXPEDITOR_TEST_CLAUDE")
    if named:
        path = Path(named)
        return path if path.is_file() else None
    on_path = shutil.which("claude")
    if on_path:
        return Path(on_path)
    return PINNED_CLAUDE if PINNED_CLAUDE.is_file() else None


@pytest.fixture(scope="session")
def claude_cli() -> Path:
    """The real Claude Code CLI; skips when it is missing, except under ``CI=true``, where it fails."""
    found = find_claude_cli()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(MISSING_CLAUDE)
        pytest.skip(MISSING_CLAUDE)
    return found


@pytest.fixture
def scripted_api() -> Generator[ScriptedMessagesAPI]:
    """A running scripted Messages API with an empty script: ``scripted_api.add(Reply.text("hi"))``."""
    with ScriptedMessagesAPI() as api:
        yield api


@pytest.fixture
def claude_config_dir(tmp_path: Path) -> Path:
    """A fresh ``CLAUDE_CONFIG_DIR``: transcripts land in ``<it>/projects/…``."""
    path = tmp_path / "claude-config"
    path.mkdir()
    return path


def claude_offline_env(api: ScriptedMessagesAPI, config_dir: Path, home: Path) -> dict[str, str]:
    """The environment that runs the real CLI against ``api``, isolated from the user's accounts."""
    base = {key: os.environ[key] for key in _KEPT_ENV if key in os.environ}
    return offline_cli_env(api.base_url, config_dir, {**base, "HOME": str(home)})


@pytest.fixture
def claude_env(scripted_api: ScriptedMessagesAPI, claude_config_dir: Path, tmp_path: Path) -> dict[str, str]:
    """``claude_offline_env`` for ``scripted_api`` and ``claude_config_dir``, with a temporary HOME."""
    home = tmp_path / "home"
    home.mkdir()
    return claude_offline_env(scripted_api, claude_config_dir, home)


@pytest.fixture
def settings(claude_cli: Path, claude_config_dir: Path, tmp_path: Path) -> Settings:
    """expeditor driving the real CLI: a temporary home, generous limits, fast polling."""
    return load_settings(
        home=tmp_path / "expeditor-home",
        claude_command=str(claude_cli),
        claude_config_dir=claude_config_dir,
        allowed_roots=(tmp_path,),
        timeout=60,
        stale_threshold=60,
        poll_interval=0.05,
        children_interval=0.5,
        kill_grace=0.5,
    )
