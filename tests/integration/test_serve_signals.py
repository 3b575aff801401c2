"""A stdio ``expeditor serve`` stops on SIGINT or SIGTERM while its client still holds its input open, as a person's
Ctrl-C or Claude Code's stop sequence expects, and a stop with nothing to stop is logged as the normal end it is.

The server is driven over its pipes with raw JSON-RPC lines, so the test holds its stdin as a client would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import psutil
import pytest

from expeditor.testing import read_invocation_log

# The bound: Claude Code sends SIGKILL about 500 ms after its SIGINT, and a person expects Ctrl-C to stop it.
EXIT_BOUND = 1.0
LINE_TIMEOUT = 60.0
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def environment(tmp_path: Path, scenario: dict[str, Any], **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "EXPEDITOR_HOME": str(tmp_path / "home"),
        "EXPEDITOR_CLAUDE_COMMAND": f"{sys.executable} -m expeditor.testing.fake_agent",
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
        "EXPEDITOR_FAKE_SCENARIO": json.dumps(scenario),
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
    }
    for inherited in ("EXPEDITOR_HTTP_TOKEN", "CLAUDE_CODE_SESSION_ID", "EXPEDITOR_SESSION_KIND"):
        env.pop(inherited, None)
    return {**env, **extra}


def send(server: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    assert server.stdin is not None
    server.stdin.write(json.dumps(message).encode() + b"\n")
    server.stdin.flush()


def read_line(stream: IO[bytes], within: float = LINE_TIMEOUT) -> bytes:
    """One line from ``stream``, or a failure after ``within`` seconds (a read that could block forever)."""
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(within):
            raise AssertionError(f"no line within {within} s")
    return stream.readline()


@contextmanager
def stdio_server(env: dict[str, str]) -> Generator[subprocess.Popen[bytes]]:
    """``expeditor serve`` over pipes, initialized; its stdin stays open until the test ends."""
    server = subprocess.Popen(
        [sys.executable, "-m", "expeditor", "serve"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        send(server, INITIALIZE)
        # Answered: the server runs, its signal handler is installed and its runtime is open.
        assert json.loads(read_line(server.stdout))["id"] == 1
        send(server, INITIALIZED)
        yield server
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        for stream in (server.stdin, server.stdout, server.stderr):
            if stream is not None:
                stream.close()


def stopped_within(server: subprocess.Popen[bytes], signum: signal.Signals) -> tuple[int, float]:
    started = time.monotonic()
    server.send_signal(signum)
    try:
        code = server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running 30 s after {signum.name} with its input open") from None
    return code, time.monotonic() - started


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stdio_server_with_its_input_open_exits_0_at_once_on_a_signal_and_its_sessions_die(
    tmp_path: Path, signum: signal.Signals
) -> None:
    scenario = {"steps": [{"spawn": {"sleep": 60}}, {"hang": True}]}
    home = tmp_path / "home"
    with stdio_server(environment(tmp_path, scenario)) as server:
        call = {"skill_command": "/hang", "cwd": str(tmp_path)}
        send(
            server,
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "run_skill", "arguments": call}},
        )
        deadline = time.monotonic() + LINE_TIMEOUT
        while len(read_invocation_log(tmp_path / "agent.log")) < 2:  # the session and its child are running
            assert time.monotonic() < deadline, "the session did not start"
            time.sleep(0.05)  # a file another process writes: no event to wait on
        code, elapsed = stopped_within(server, signum)
        assert server.stderr is not None
        stderr = server.stderr.read().decode()
    assert code == 0, stderr
    assert elapsed < EXIT_BOUND, f"exited {elapsed:.2f} s after {signum.name}"
    assert "Traceback" not in stderr, stderr
    log_entries = read_invocation_log(tmp_path / "agent.log")
    pids = [entry["pid"] for entry in log_entries if entry["event"] in ("launch", "spawned")]
    assert len(pids) == 2
    assert [pid for pid in pids if alive(pid)] == []
    assert list((home / "sessions").glob("*.json")) == []
    log = (home / "logs" / "expeditor.log").read_text()
    assert f"received {signum.name}: stopped 1 sessions" in log


def test_a_nested_server_stopped_with_no_session_logs_its_stop_at_info_and_no_warning(tmp_path: Path) -> None:
    # Claude Code stops each session's nested server with SIGINT when the session ends (then SIGTERM 100 ms
    # later): that is every nested server's normal end, not something to warn about.
    env = environment(tmp_path, {"steps": [{"result": "done"}]}, CLAUDE_CODE_SESSION_ID=str(uuid.uuid4()))
    env["EXPEDITOR_SESSION_KIND"] = "orchestrator"
    with stdio_server(env) as server:
        send(server, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        assert server.stdout is not None
        assert json.loads(read_line(server.stdout))["id"] == 2
        server.send_signal(signal.SIGINT)
        time.sleep(0.1)  # Claude Code's own spacing of the two signals
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    lines = (tmp_path / "home" / "logs" / "expeditor.log").read_text().splitlines()
    (stop,) = [line for line in lines if "received SIGINT: stopped 0 sessions" in line]
    assert " INFO " in stop
    assert [line for line in lines if " WARNING " in line or " ERROR " in line] == []
