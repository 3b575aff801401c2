"""expeditor serve over streamable HTTP: bearer token, and the caller named by the header expeditor writes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from expeditor.monitor import parse_marker_name

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "EXPEDITOR_HOME": str(tmp_path / "home"),
        "EXPEDITOR_CLAUDE_COMMAND": f"{sys.executable} -m expeditor.testing.fake_agent",
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
        "EXPEDITOR_HTTP_TOKEN": TOKEN,
        "EXPEDITOR_FAKE_SCENARIO": json.dumps({"steps": [{"sleep": 0.6}, {"assistant": "ok"}, {"result": {}}]}),
    }
    env.pop("CLAUDE_CODE_SESSION_ID", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "expeditor", "serve", "--transport", "http", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with socket.socket() as probe:
            probe.settimeout(0.1)
            for _ in range(200):
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
                time.sleep(0.05)  # another process binding its port: no event to wait on
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        assert server.stderr is not None
        server.stderr.close()


async def test_a_request_without_the_token_is_refused(http_server: str) -> None:
    async with httpx2.AsyncClient() as client:
        response = await client.post(http_server, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 401


async def test_the_caller_header_keys_the_marker(http_server: str, tmp_path: Path) -> None:
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
    assert result.structured_content["caller_session_id"] == caller
    assert seen_markers
    assert {parse_marker_name(name) for name in seen_markers} == {("run-skill", caller)}
