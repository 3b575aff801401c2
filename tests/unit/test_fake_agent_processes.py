"""The fake agent as a process among processes: signals, the children it spawns, the MCP servers it calls.

Each test waits on something the agent wrote (a stdout or stderr line, the invocation log) under a
deadline, never on a sleep, and kills every process it started before it ends.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol

import psutil
import pytest

from expeditor.testing import fake_agent_command, fake_agent_env, read_invocation_log, stream_events

ECHO_SERVER = Path(__file__).parents[1] / "support" / "echo_mcp_server.py"


def read_line(stream: IO[bytes], timeout: float = 10.0) -> str:
    """One line from a pipe, or fail after ``timeout`` seconds (byte by byte: nothing is read ahead)."""
    deadline = time.monotonic() + timeout
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                pytest.fail(f"no complete line within {timeout} s (got {line!r})")
            byte = os.read(stream.fileno(), 1)
            if not byte:
                pytest.fail(f"the stream ended mid-line (got {line!r})")
            line += byte
    return line.decode()


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # dead, waiting for whoever reaps it
    except psutil.NoSuchProcess:
        return True


def kill_and_reap(pids: list[int], timeout: float = 5.0) -> None:
    """SIGKILL each pid still alive, then wait (bounded) until each is dead; reaping is its parent's job."""
    processes: list[psutil.Process] = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            process.kill()
            processes.append(process)
        except psutil.NoSuchProcess:
            continue
    deadline = time.monotonic() + timeout
    while not all(_gone(process) for process in processes):
        assert time.monotonic() < deadline, "a killed process is still running"
        time.sleep(0.01)


class Launched:
    """A running fake agent with pipes; ``close`` kills it and everything its log says it spawned."""

    def __init__(self, tmp_path: Path, scenario: dict[str, Any], *args: str, env: dict[str, str] | None = None):
        self.log = tmp_path / "invocations.jsonl"
        full_env = fake_agent_env(
            os.environ, config_dir=tmp_path / "config", log=self.log, scenario=json.dumps(scenario)
        )
        full_env.update(env or {})
        self.process = subprocess.Popen(
            [*fake_agent_command(), "-p", "go", "--output-format", "stream-json", "--verbose", *args],
            cwd=tmp_path,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def stdout_line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        return json.loads(read_line(self.process.stdout))

    def stderr_line(self) -> str:
        assert self.process.stderr is not None
        return read_line(self.process.stderr)

    def spawned(self) -> list[dict[str, Any]]:
        return [entry for entry in read_invocation_log(self.log) if entry["event"] == "spawned"]

    def close(self) -> None:
        kill_and_reap([self.process.pid, *(entry["pid"] for entry in self.spawned())])
        self.process.wait(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


class Launch(Protocol):
    def __call__(self, scenario: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> Launched: ...


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    started: list[Launched] = []

    def start(scenario: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> Launched:
        agent = Launched(tmp_path, scenario, *args, env=env)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.close()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_end_the_agent_at_once_with_claude_codes_codes(
    launch: Launch, signum: int, code: int
) -> None:
    agent = launch({"steps": [{"hang": True}]})
    assert agent.stdout_line()["subtype"] == "init"

    agent.process.send_signal(signum)

    assert agent.process.wait(timeout=5) == code
    assert read_invocation_log(agent.log)[-1]["event"] == "signal"


def test_an_agent_ignoring_sigterm_survives_it_until_sigkill(launch: Launch) -> None:
    agent = launch({"ignore_sigterm": True, "steps": [{"hang": True}]})
    assert agent.stdout_line()["subtype"] == "init"

    agent.process.send_signal(signal.SIGTERM)

    assert agent.stderr_line() == "fake agent: ignoring SIGTERM\n"
    assert agent.process.poll() is None
    agent.process.kill()
    assert agent.process.wait(timeout=5) == -signal.SIGKILL


def test_setsid_children_and_double_forked_daemons_escape_the_agent_but_keep_its_session_id(
    launch: Launch,
) -> None:
    scenario = {
        "steps": [
            {"spawn": {"sleep": 60, "setsid": True, "ignore_sigterm": True}},
            {"spawn": {"sleep": 60, "double_fork": True, "close_stdio": True}},
            {"stdout_only": {"type": "test", "note": "spawned"}},
            {"hang": True},
        ]
    }
    agent = launch(scenario, env={"EXPEDITOR_SESSION_ID": "fake-session-7"})
    agent.stdout_line()  # init
    assert agent.stdout_line()["note"] == "spawned"

    setsid_child, daemon = agent.spawned()
    assert (setsid_child["setsid"], setsid_child["double_fork"]) == (True, False)
    assert (daemon["setsid"], daemon["double_fork"]) == (True, True)
    assert setsid_child["parent"] == daemon["parent"] == agent.process.pid
    agent_pgid = os.getpgid(agent.process.pid)
    descendants = {p.pid for p in psutil.Process(agent.process.pid).children(recursive=True)}
    for entry in (setsid_child, daemon):
        child = psutil.Process(entry["pid"])
        assert child.is_running()
        assert child.status() != psutil.STATUS_ZOMBIE
        assert os.getpgid(child.pid) != agent_pgid
        assert child.environ()["EXPEDITOR_SESSION_ID"] == "fake-session-7"
    assert setsid_child["pid"] in descendants
    assert daemon["pid"] not in descendants
    assert psutil.Process(daemon["pid"]).ppid() != agent.process.pid


def test_call_tool_reaches_a_stdio_server_started_with_the_sessions_id(launch: Launch) -> None:
    config = {
        "mcpServers": {
            "echo": {
                "command": sys.executable,
                "args": [str(ECHO_SERVER)],
                "env": {"ECHO_CONFIG_VALUE": "from-config"},
            }
        }
    }
    scenario = {"steps": [{"call_tool": {"server": "echo", "tool": "session_env"}}, {"result": {}}]}
    agent = launch(
        scenario,
        "--mcp-config",
        json.dumps(config),
        "--allowedTools",
        "mcp__echo",
        env={"EXPEDITOR_SESSION_ID": "expeditor-side-id"},
    )
    assert agent.process.wait(timeout=30) == 0
    assert agent.process.stdout is not None
    events = stream_events(agent.process.stdout.read().decode())
    init = events[0]
    assert init["mcp_servers"] == [{"name": "echo", "status": "pending"}]

    tool_use = next(e for e in events if e["type"] == "assistant")["message"]["content"][0]
    assert (tool_use["type"], tool_use["name"]) == ("tool_use", "mcp__echo__session_env")
    (answer,) = [e for e in events if e["type"] == "user"]
    block = answer["message"]["content"][0]
    assert block["tool_use_id"] == tool_use["id"]
    seen = json.loads(block["content"])
    assert seen["claude_code_session_id"] == init["session_id"]
    assert seen["expeditor_session_id"] == "expeditor-side-id"
    assert seen["echo_config_value"] == "from-config"
    assert answer["tool_use_result"]["structuredContent"] == seen
    assert events[-1]["num_turns"] == 1


def test_call_tool_without_an_allow_rule_is_denied_like_headless_claude_code(launch: Launch) -> None:
    config = {"mcpServers": {"echo": {"command": "/nonexistent/never-started"}}}
    scenario = {
        "steps": [
            {"call_tool": {"server": "echo", "tool": "echo", "arguments": {"text": "hi"}}},
            {"result": {}},
        ]
    }
    agent = launch(scenario, "--mcp-config", json.dumps(config))

    assert agent.process.wait(timeout=10) == 0
    assert agent.process.stdout is not None
    events = stream_events(agent.process.stdout.read().decode())
    denied = next(e for e in events if e.get("subtype") == "permission_denied")
    assert denied["tool_name"] == "mcp__echo__echo"
    (answer,) = [e for e in events if e["type"] == "user"]
    assert answer["message"]["content"][0]["is_error"] is True
    assert events[-1]["permission_denials"] == [
        {"tool_name": "mcp__echo__echo", "tool_use_id": denied["tool_use_id"], "tool_input": {"text": "hi"}}
    ]
