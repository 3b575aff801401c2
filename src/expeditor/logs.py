"""Logging: to stderr and a rotating file under ``<home>/logs/``, never stdout (over stdio it is the protocol).

expeditor's own lines, the MCP SDK's and uvicorn's all take one format and one path: the handlers sit on the
root logger, which also keeps the SDK from installing its own (it configures the root logger only when that
has no handler).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
from io import TextIOWrapper
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TextIO

from expeditor.config import Settings
from expeditor.homes import create_private_file, make_private_dir

__all__ = ["LOG_FILE_NAME", "configure_logging"]

LOG_FILE_NAME = "expeditor.log"
_FORMAT = "%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s"
# The loggers whose INFO lines the log file keeps: ours, the SDK's (sessions opened and closed, a tool's
# rejected arguments) and uvicorn's (the HTTP server starting and stopping). Other libraries: warnings only.
_RECORDED = ("expeditor", "mcp", "uvicorn")


class _CurrentStderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is when a line is logged.

    While ``recipe run`` shows its live table, rich puts a proxy there that prints each line above the
    table; a stream bound at start would write into the middle of it.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _SharedRotatingFileHandler(RotatingFileHandler):
    """A rotating log file that several processes append to (a server, its nested servers, pipeline runners).

    A process follows the file's name, not the file it opened, so after another process rotated it writes to
    the new file rather than into a backup; a rotation holds a lock on the file it rotates, so two processes
    reaching the size together rotate once. Every file it creates is 0600.
    """

    def _open(self) -> TextIOWrapper:
        create_private_file(Path(self.baseFilename))
        return super()._open()

    def _is_current(self, stream: TextIOWrapper) -> bool:
        try:
            named = os.stat(self.baseFilename)
        except OSError:
            return False
        opened = os.fstat(stream.fileno())
        return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)

    def _reopen(self, stream: TextIOWrapper) -> None:
        stream.close()
        self.stream = self._open()

    def shouldRollover(self, record: logging.LogRecord) -> int:  # noqa: N802 (the logging API's name)
        stream = self.stream
        if stream is not None and not self._is_current(stream):
            self._reopen(stream)
        return super().shouldRollover(record)

    def doRollover(self) -> None:  # noqa: N802 (the logging API's name)
        stream = self.stream
        if stream is None:
            super().doRollover()
            return
        # The lock is held through a second descriptor of the file, so it lasts until the rename is done (the
        # rotation closes the stream first).
        lock = os.dup(stream.fileno())
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._is_current(stream):
                super().doRollover()
            else:  # another process rotated it while this one waited for the lock
                self._reopen(stream)
        finally:
            os.close(lock)


def configure_logging(settings: Settings, *, level: int = logging.INFO, stderr_level: int = logging.WARNING) -> None:
    """Send log records to stderr (``stderr_level`` and up) and to ``<home>/logs/expeditor.log``, which rotates
    at ``log_max_bytes`` keeping ``log_backup_count`` older files."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _CurrentStderrHandler | _SharedRotatingFileHandler):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.WARNING)
    for name in _RECORDED:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = True
    to_stderr = _CurrentStderrHandler()
    to_stderr.setLevel(stderr_level)
    to_stderr.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(to_stderr)
    logs_dir = settings.logs_dir
    try:
        make_private_dir(logs_dir)
        to_file = _SharedRotatingFileHandler(
            logs_dir / LOG_FILE_NAME,
            maxBytes=settings.log_max_bytes,
            backupCount=settings.log_backup_count,
            encoding="utf-8",
        )
    except OSError as exc:
        logging.getLogger("expeditor").warning("cannot write the log file under %s: %s", logs_dir, exc)
    else:
        to_file.setLevel(level)
        to_file.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(to_file)
