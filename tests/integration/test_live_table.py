"""A log line written while ``recipe run`` shows its live table goes above the table, not into it.

The runner runs on a pseudo-terminal, so rich draws its live table there; a step hangs, and Ctrl-C (SIGINT) makes the
runner log a WARNING while the table is still shown. Rich redraws a live table by moving the cursor up over it and
erasing each line (ESC[1A, ESC[2K) before it prints anything above it: a line printed that way starts on an erased
line. A line written straight to the terminal lands after whatever the table last drew, mid-line.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.fake import FAKE_AGENT_COMMAND

ONE_STEP = """\
name: one
description: one skill step
orchestrator: pipeline
steps:
  only: {skill: /only}
"""
HANG = {"steps": [{"assistant": "working"}, {"hang": True}]}
ERASE_LINE = b"\x1b[2K"
STOP_LINE = b"the pipeline runner received SIGINT: stopped 1 sessions"
WITHIN = 60.0


def read_until(master: int, output: bytearray, wanted: bytes, within: float = WITHIN) -> None:
    """Read the terminal into ``output`` until ``wanted`` appears in it (or the runner closes it)."""
    deadline = time.monotonic() + within
    while wanted not in output:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{wanted!r} not shown within {within} s: {bytes(output[-2000:])!r}"
        ready, _, _ = select.select([master], [], [], remaining)
        if not ready:
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every process holding the terminal has gone
            chunk = b""
        if not chunk:
            assert wanted in output, f"{wanted!r} never shown: {bytes(output[-2000:])!r}"
            return
        output.extend(chunk)


def test_a_warning_logged_while_the_live_table_is_shown_is_printed_above_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "recipes").mkdir(parents=True)
    (home / "recipes" / "one.yaml").write_text(ONE_STEP)
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "only.json").write_text(json.dumps(HANG))
    env = {
        **os.environ,
        "EXPEDITOR_CLAUDE_COMMAND": FAKE_AGENT_COMMAND,
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
        "EXPEDITOR_FAKE_SCENARIO_DIR": str(tmp_path / "scenarios"),
        "TERM": "xterm-256color",
        "COLUMNS": "240",  # wide enough that rich does not wrap the log line
        "LINES": "50",
    }
    for variable in ("NO_COLOR", "TERM_PROGRAM", "CLAUDE_CODE_SESSION_ID", "EXPEDITOR_SESSION_KIND"):
        env.pop(variable, None)
    command = [sys.executable, "-m", "expeditor", "--home", str(home), "recipe", "run", "one", "--cwd", str(tmp_path)]
    master, terminal = pty.openpty()
    runner = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = bytearray()
    try:
        read_until(master, output, b"running")  # the live table shows the running step
        runner.send_signal(signal.SIGINT)
        read_until(master, output, STOP_LINE)
        assert runner.wait(timeout=WITHIN) == 130
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        os.close(master)
    logged = re.search(rb"\d{4}-\d\d-\d\d [\d:,]+ WARNING \S+ pid=\d+ " + re.escape(STOP_LINE), output)
    assert logged is not None, bytes(output[-2000:])
    # Printed above the table: rich erased the table's lines first. Written raw, it follows the table's last row.
    before = bytes(output[max(0, logged.start() - len(ERASE_LINE)) : logged.start()])
    assert before == ERASE_LINE, f"the log line was written into the table: {bytes(output[: logged.end()])[-400:]!r}"
