"""Logging: to stderr and a file under ``<home>/logs/``, never stdout (over stdio it is the protocol)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

__all__ = ["configure_logging"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s"


def configure_logging(logs_dir: Path | None, *, level: int = logging.INFO, stderr_level: int = logging.WARNING) -> None:
    """Send log records to stderr (``stderr_level`` and up) and to ``logs_dir/expeditor.log``."""
    root = logging.getLogger("expeditor")
    root.setLevel(level)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setLevel(stderr_level)
    to_stderr.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(to_stderr)
    if logs_dir is not None:
        try:
            logs_dir.mkdir(parents=True, exist_ok=True)
            to_file = logging.FileHandler(logs_dir / "expeditor.log", encoding="utf-8")
        except OSError as exc:
            root.warning("cannot write the log file under %s: %s", logs_dir, exc)
        else:
            to_file.setLevel(level)
            to_file.setFormatter(logging.Formatter(_FORMAT))
            root.addHandler(to_file)
