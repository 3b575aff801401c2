"""expeditor serve over streamable HTTP: who may reach it (the bind check at start, Host and Origin, the bearer
token), and a caller header that names nobody."""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token"
TEAM_HOST = "expeditor.team.example"
TEAM_ORIGIN = f"https://{TEAM_HOST}"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}},
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def is_listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def server_environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The server's environment: a fake agent, a home under tmp_path, no token unless given, and `settings`."""
    env = {
        **os.environ,
        "EXPEDITOR_HOME": str(tmp_path / "home"),
        "EXPEDITOR_CLAUDE_COMMAND": f"{sys.executable} -m expeditor.testing.fake_agent",
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
        "EXPEDITOR_FAKE_SCENARIO": json.dumps({"steps": [{"sleep": 0.6}, {"assistant": "ok"}, {"result": {}}]}),
    }
    env.pop("CLAUDE_CODE_SESSION_ID", None)
    env.pop("EXPEDITOR_HTTP_TOKEN", None)
    env.update({f"EXPEDITOR_{name.upper()}": value for name, value in settings.items()})
    return env


def serve_command(host: str, port: int, *flags: str) -> list[str]:
    serve = [sys.executable, "-m", "expeditor", "serve", "--transport", "http"]
    return [*serve, "--host", host, "--port", str(port), *flags]


def spawn_server(command: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """`expeditor serve` with its stdout and stderr piped to the test."""
    return subprocess.Popen(
        command, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def ready_line(server: subprocess.Popen[bytes], within: float = 60.0) -> str:
    """The line the server prints on stderr once it listens (what it printed before, a refusal, fails the test)."""
    assert server.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + within
    with selectors.DefaultSelector() as selector:
        selector.register(server.stderr, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"not listening after {within} s: {seen}"
            assert selector.select(remaining), f"not listening after {within} s: {seen}"
            line = server.stderr.readline().decode()
            assert line, f"the server exited before it listened: {seen}"
            if line.startswith("expeditor: serving MCP on "):
                return line.rstrip("\n")
            seen.append(line)


@contextlib.contextmanager
def running_server(command: list[str], env: Mapping[str, str], port: int) -> Generator[subprocess.Popen[bytes]]:
    """Start `expeditor serve`, wait until it says it listens on `port`, and stop it with SIGTERM afterwards."""
    server = spawn_server(command, env)
    try:
        assert f":{port}/mcp " in ready_line(server)
        yield server
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        for stream in (server.stdout, server.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    with running_server(serve_command("127.0.0.1", port), server_environment(tmp_path, http_token=TOKEN), port):
        yield f"http://127.0.0.1:{port}/mcp"


async def initialize_status(url: str, *, host: str, origin: str | None = None, token: str | None = TOKEN) -> int:
    """The status of an MCP initialize request sent to `url` with these Host, Origin and bearer headers."""
    headers = {"host": host, "accept": "application/json, text/event-stream"}
    if origin is not None:
        headers["origin"] = origin
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(timeout=10) as client:
        response = await client.post(url, json=INITIALIZE, headers=headers)
    return response.status_code


def test_a_non_loopback_bind_without_a_token_is_refused_with_one_line_and_nothing_listens(tmp_path: Path) -> None:
    port = free_port("0.0.0.0")
    finished = subprocess.run(
        serve_command("0.0.0.0", port),
        env=server_environment(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 2
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1, finished.stderr
    for named in ("0.0.0.0", "EXPEDITOR_HTTP_TOKEN", "http_token", "--insecure-no-token"):
        assert named in lines[0]
    assert not is_listening(port)
    assert "serving MCP over HTTP" not in (tmp_path / "home" / "logs" / "expeditor.log").read_text()


def test_a_port_in_use_ends_in_a_line_naming_the_url_and_exits_1_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        finished = subprocess.run(
            serve_command("127.0.0.1", port),
            env=server_environment(tmp_path),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert finished.returncode == 1, finished.stderr
    assert "Traceback" not in finished.stderr
    last = finished.stderr.strip().splitlines()[-1]
    assert last.startswith(f"expeditor: could not serve MCP on http://127.0.0.1:{port}/mcp: "), finished.stderr
    assert "address already in use" in last


async def test_insecure_no_token_serves_a_non_loopback_bind_with_a_warning_at_every_start(tmp_path: Path) -> None:
    env = server_environment(tmp_path)
    for _ in range(2):
        port = free_port("0.0.0.0")
        url = f"http://127.0.0.1:{port}/mcp"
        with running_server(serve_command("0.0.0.0", port, "--insecure-no-token"), env, port):
            # No token is asked for, but Host and Origin are still checked.
            assert await initialize_status(url, host=f"0.0.0.0:{port}", token=None) == 200
            assert await initialize_status(url, host="evil.example", token=None) == 421
    log = (tmp_path / "home" / "logs" / "expeditor.log").read_text()
    warnings = [line for line in log.splitlines() if "WARNING" in line and "--insecure-no-token" in line]
    assert len(warnings) == 2, log


async def test_a_host_or_origin_the_loopback_server_was_not_told_of_is_refused(http_server: str) -> None:
    port = http_server.split(":")[2].split("/")[0]
    for loopback in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost:9000"):  # 9000: an SSH tunnel
        assert await initialize_status(http_server, host=loopback) == 200
    assert await initialize_status(http_server, host=f"{TEAM_HOST}:{port}") == 421
    assert await initialize_status(http_server, host="evil.example") == 421
    assert await initialize_status(http_server, host=f"127.0.0.1:{port}", origin="http://evil.example") == 403
    assert await initialize_status(http_server, host=f"127.0.0.1:{port}", origin=TEAM_ORIGIN) == 403
    assert await initialize_status(http_server, host=f"127.0.0.1:{port}", origin=f"http://localhost:{port}") == 200


@pytest.mark.parametrize("bind", ["127.0.0.1", "0.0.0.0"])
async def test_with_a_token_a_foreign_host_or_origin_is_refused_on_every_bind_and_the_team_names_admitted(
    tmp_path: Path, bind: str
) -> None:
    port = free_port(bind)
    url = f"http://127.0.0.1:{port}/mcp"
    env = server_environment(
        tmp_path, http_token=TOKEN, http_allowed_hosts=f"{TEAM_HOST}, other.example:1", http_allowed_origins=TEAM_ORIGIN
    )
    own = f"{bind}:{port}"
    expected = {
        # (Host, Origin, token): status
        (own, None, TOKEN): 200,
        (f"{TEAM_HOST}:{port}", None, TOKEN): 200,
        (TEAM_HOST, None, TOKEN): 200,  # behind a proxy on 443: no port in Host
        (own, TEAM_ORIGIN, TOKEN): 200,
        (own, f"http://{own}", TOKEN): 200,
        (f"{TEAM_HOST}:{port}", None, None): 401,
        ("evil.example", None, TOKEN): 421,
        (f"evil.example:{port}", None, TOKEN): 421,
        ("evil.example", None, None): 421,  # refused before the bearer check
        (f"other.example:{port}", None, TOKEN): 421,  # admitted on port 1 only
        (own, "http://evil.example", TOKEN): 403,
        (f"{TEAM_HOST}:{port}", "http://evil.example", TOKEN): 403,
        (f"localhost:{port}", None, TOKEN): 200 if bind == "127.0.0.1" else 421,  # loopback names: loopback binds
    }

    with running_server(serve_command(bind, port), env, port):
        statuses = {
            (host, origin, token): await initialize_status(url, host=host, origin=origin, token=token)
            for host, origin, token in expected
        }
    assert statuses == expected


async def test_a_request_without_the_token_is_refused(http_server: str) -> None:
    async with httpx2.AsyncClient() as client:
        response = await client.post(http_server, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 401


async def test_the_caller_header_names_nobody_so_the_server_token_holds_no_marker(
    http_server: str, tmp_path: Path
) -> None:
    # Identity comes from the token alone: a header could name any session, and a marker would keep it alive.
    caller = str(uuid.uuid4())
    headers = {"authorization": f"Bearer {TOKEN}", "x-expeditor-caller-session": caller}
    seen_markers: list[str] = []
    result: CallToolResult | None = None

    async def watch_markers() -> None:
        while True:
            seen_markers.extend(p.name for p in (tmp_path / "home" / "markers").glob("*.marker"))
            await anyio.sleep(0.05)

    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(http_server, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        async with anyio.create_task_group() as group:
            group.start_soon(watch_markers)
            result = await session.call_tool("run_skill", {"skill_command": "/x", "cwd": str(tmp_path)})
            group.cancel_scope.cancel()
    assert result is not None
    assert not result.is_error, result.content
    assert result.structured_content is not None
    assert result.structured_content["caller_session_id"] is None
    assert not seen_markers


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("bind", "token", "expected"),
    [
        ("127.0.0.1", TOKEN, "http://127.0.0.1:{port}/mcp (bearer token required)"),
        ("127.0.0.1", None, "http://127.0.0.1:{port}/mcp (no token)"),
        pytest.param(
            "::1",
            None,
            "http://[::1]:{port}/mcp (no token)",
            marks=pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback"),
        ),
    ],
)
async def test_the_http_server_prints_its_url_once_it_listens_and_a_client_reaches_it_there(
    tmp_path: Path, bind: str, token: str | None, expected: str
) -> None:
    port = free_port() if bind == "127.0.0.1" else _free_ipv6_port()
    env = server_environment(tmp_path, **({"http_token": token} if token else {}))
    server = spawn_server(serve_command(bind, port), env)
    try:
        line = ready_line(server)
        assert line == f"expeditor: serving MCP on {expected.format(port=port)}"
        url = line.removeprefix("expeditor: serving MCP on ").split(" ")[0]
        host = url.split("/")[2]
        assert await initialize_status(url, host=host, token=token) == 200  # printed once it listens: no retry
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert server.stdout is not None
    assert server.stderr is not None
    assert server.stdout.read() == b""  # stdout stays clean over HTTP too
    server.stdout.close()
    server.stderr.close()


def _free_ipv6_port() -> int:
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_stops_the_http_server_with_exit_0_and_no_traceback_while_a_client_is_connected(
    tmp_path: Path, signum: signal.Signals
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    server = spawn_server(serve_command("127.0.0.1", port), server_environment(tmp_path, http_token=TOKEN))
    try:
        ready_line(server)
        headers = {"authorization": f"Bearer {TOKEN}"}
        # A connected client keeps an event stream open (Claude Code does): the stop must end it, not wait on it.
        with contextlib.suppress(Exception):
            async with (
                httpx2.AsyncClient(headers=headers, timeout=30) as http,
                streamable_http_client(url, http_client=http) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                await session.list_tools()
                server.send_signal(signum)
                await anyio.to_thread.run_sync(lambda: server.wait(timeout=30))
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
    assert server.stdout is not None
    assert server.stderr is not None
    server.stdout.close()
    stderr = server.stderr.read().decode()
    server.stderr.close()
    assert server.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    log = (tmp_path / "home" / "logs" / "expeditor.log").read_text()
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log
    # The SDK's and uvicorn's own lines come in expeditor's format, in its log.
    assert re.search(r" INFO mcp\.server\.\S+ pid=\d+ Created new transport", log), log
    assert re.search(r" INFO uvicorn\S* pid=\d+ Application shutdown complete", log), log
    assert "session manager" not in stderr  # INFO lines stay in the file


async def test_a_refused_request_says_a_bearer_token_is_expected(http_server: str) -> None:
    # Without the challenge Claude Code starts an OAuth discovery and reports a failed client registration.
    async with httpx2.AsyncClient() as client:
        missing = await client.post(http_server, json=INITIALIZE)
        wrong = await client.post(http_server, json=INITIALIZE, headers={"authorization": "Bearer wrong"})
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].split()[0] == "Bearer"
