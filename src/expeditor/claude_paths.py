"""Where Claude Code keeps a session's transcript: the one place this rule is written down.

``<config dir>/projects/<cwd with every non-alphanumeric character replaced by "-">/<session id>.jsonl``.
Standard library only: the fake agent imports it at start-up, the executor when it plans a launch.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["project_dir", "transcript_path"]

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def project_dir(claude_config_dir: Path, cwd: Path | str) -> Path:
    """``<config>/projects/<cwd with every non-alphanumeric character as '-'>``."""
    return claude_config_dir / "projects" / _NOT_ALNUM.sub("-", str(cwd))


def transcript_path(claude_config_dir: Path, cwd: Path | str, session_id: str) -> Path:
    """``<config>/projects/<mangled cwd>/<session id>.jsonl``."""
    return project_dir(claude_config_dir, cwd) / f"{session_id}.jsonl"
