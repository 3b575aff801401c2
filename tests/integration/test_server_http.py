"""expeditor serve over streamable HTTP: who may reach it (the bind check at start, Host and Origin, the bearer
token), and a caller header that names nobody."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
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


@contextlib.contextmanager
def running_server(command: list[str], env: Mapping[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Start `expeditor serve`, wait until it listens on 127.0.0.1:`port`, and stop it with SIGTERM afterwards."""
    server = subprocess.Popen(
        command, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        for _ in range(200):
            if is_listening(port) or server.poll() is not None:
                break
            time.sleep(0.05)  # another process binding its port: no event to wait on
        assert server.poll() is None, "the server exited before it listened"
        yield server
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        assert server.stderr is not None
        server.stderr.close()


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
