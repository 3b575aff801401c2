"""The log file: one format for every line, rotated at a size with a bounded number of backups, private to the user."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from expeditor.config import load_settings
from expeditor.logs import LOG_FILE_NAME, _SharedRotatingFileHandler, configure_logging  # pyright: ignore[reportPrivateUsage]

MAX_BYTES = 1024


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging changes the process's root logger: put it back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_log_rotates_at_its_size_keeps_its_backup_count_and_every_file_is_0600(
    tmp_path: Path, restored_logging: None
) -> None:
    settings = load_settings(home=tmp_path / "home", log_max_bytes=MAX_BYTES, log_backup_count=2)
    configure_logging(settings)
    logger = logging.getLogger("expeditor.test")
    for number in range(100):  # about 12 KB: several rotations
        logger.info("line %03d %s", number, "x" * 60)
    logs = settings.logs_dir
    assert sorted(path.name for path in logs.iterdir()) == [LOG_FILE_NAME, f"{LOG_FILE_NAME}.1", f"{LOG_FILE_NAME}.2"]
    for path in logs.iterdir():
        assert path.stat().st_size <= MAX_BYTES
        assert mode_of(path) == 0o600, path
    assert "line 099" in (logs / LOG_FILE_NAME).read_text()  # the newest line is in the current file
    assert "line 000" not in "".join(path.read_text() for path in logs.iterdir())  # the oldest are gone


def test_the_sdks_and_uvicorns_lines_take_expeditors_format_in_the_file(tmp_path: Path, restored_logging: None) -> None:
    settings = load_settings(home=tmp_path / "home")
    configure_logging(settings)
    logging.getLogger("mcp.server.streamable_http_manager").info("session manager started")
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    logging.getLogger("some.library").info("chatter")  # other libraries: warnings only
    lines = (settings.logs_dir / LOG_FILE_NAME).read_text().splitlines()
    assert len(lines) == 2, lines
    assert " INFO mcp.server.streamable_http_manager pid=" in lines[0]
    assert " INFO uvicorn.error pid=" in lines[1]


def test_after_another_process_rotated_the_log_a_writer_follows_the_name_not_the_backup(tmp_path: Path) -> None:
    path = tmp_path / LOG_FILE_NAME
    # Two handlers on one path play two processes (a server and a pipeline runner) sharing a home.
    first = _SharedRotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=3, encoding="utf-8")
    second = _SharedRotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=3, encoding="utf-8")
    try:
        second.emit(logging.makeLogRecord({"msg": "second, before"}))
        for number in range(30):  # the first rotates the file
            first.emit(logging.makeLogRecord({"msg": f"first {number:02d} {'x' * 60}"}))
        assert (tmp_path / f"{LOG_FILE_NAME}.1").exists()
        second.emit(logging.makeLogRecord({"msg": "second, after"}))
    finally:
        first.close()
        second.close()
    assert "second, after" in path.read_text()
    backups = "".join(p.read_text() for p in tmp_path.glob(f"{LOG_FILE_NAME}.*"))
    assert "second, after" not in backups


def test_two_writers_reaching_the_size_together_rotate_once(tmp_path: Path) -> None:
    path = tmp_path / LOG_FILE_NAME
    first = _SharedRotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=3, encoding="utf-8")
    second = _SharedRotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=3, encoding="utf-8")
    try:
        first.emit(logging.makeLogRecord({"msg": "before the rotation"}))
        # Both decided to rotate; the first did it while the second waited for the lock.
        first.doRollover()
        second.doRollover()
        second.emit(logging.makeLogRecord({"msg": "after the rotation"}))
    finally:
        first.close()
        second.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOG_FILE_NAME, f"{LOG_FILE_NAME}.1"]
    assert (tmp_path / f"{LOG_FILE_NAME}.1").read_text() == "before the rotation\n"
    assert path.read_text() == "after the rotation\n"
