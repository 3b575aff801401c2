"""No credential of the server reaches a session: not its environment, not its command line.

The MCP config an orchestrator gets is a private file passed by path (0600, removed when the run ends),
not inline JSON in its argv, which every local user can read in /proc/PID/cmdline.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import anyio
import psutil
import pytest

from expeditor.executor import SessionKind
from expeditor.runs import CallerContext, open_runtime
from expeditor.testing import read_invocation_log
from tests.support.fake import fake_settings, scenario_request

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token-for-the-server-only"


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_an_orchestrator_sees_no_server_token_in_its_environment_or_argv(tmp_path: Path, transport: str) -> None:
    settings = fake_settings(tmp_path, http_token=TOKEN)
    log = tmp_path / "agent.log"
    server_env = {**os.environ, "EXPEDITOR_HTTP_TOKEN": TOKEN}
    request = scenario_request(
        tmp_path, {"steps": [{"hang": True}]}, kind=SessionKind.ORCHESTRATOR, env={"EXPEDITOR_FAKE_LOG": str(log)}
    )
    http_url = "http://127.0.0.1:9/mcp" if transport == "http" else None
    async with open_runtime(settings, env=server_env, http_url=http_url) as runtime, anyio.create_task_group() as group:
        handle = runtime.supervisor.start(group, request, CallerContext(None, None))
        with anyio.fail_after(20):
            while not (log.exists() and [e for e in read_invocation_log(log) if e["event"] == "launch"]):
                await anyio.sleep(0.02)
        (launch,) = [entry for entry in read_invocation_log(log) if entry["event"] == "launch"]
        agent = psutil.Process(launch["pid"])
        argv, environment = agent.cmdline(), agent.environ()
        config = Path(argv[argv.index("--mcp-config") + 1])
        mode = stat.S_IMODE(config.stat().st_mode)
        handle.cancel("the test has seen enough", grace=0.05)
        with anyio.fail_after(20):
            await handle.result()
    assert not any(TOKEN in part for part in argv)
    assert not any(TOKEN in value for value in environment.values())
    assert "EXPEDITOR_HTTP_TOKEN" not in environment
    assert config.is_relative_to(settings.home)
    assert mode == 0o600
    assert not config.exists()  # removed with the run
