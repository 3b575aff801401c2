"""A shared store's password reaches no session: not its MCP config, its environment or its argv.

The orchestrator's nested ``expeditor serve`` gets the store URL without the password, and the password
file's path with the rest of the environment it inherits (Claude Code passes its environment on to the
stdio servers it starts: checked with 2.1.332), so libpq finds the password where the user put it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import psutil
import pytest

from expeditor.executor import SessionKind
from expeditor.runs import CallerContext, open_runtime
from expeditor.state.store_url import without_password
from expeditor.testing import read_invocation_log
from tests.support.fake import fake_settings, scenario_request
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.anyio


async def test_an_orchestrator_gets_the_store_url_without_its_password(
    tmp_path: Path, postgres_server: PostgresServer, pg_database_url: str
) -> None:
    password = postgres_server.password
    settings = fake_settings(tmp_path, store_url=pg_database_url)
    log = tmp_path / "agent.log"
    passfile = tmp_path / "pgpass"
    server_env = {
        **os.environ,
        "EXPEDITOR_STORE_URL": pg_database_url,
        "PGPASSFILE": str(passfile),
        "PGPASSWORD": password,  # libpq's other way to a password: the server may use it, no session gets it
    }
    request = scenario_request(
        tmp_path, {"steps": [{"hang": True}]}, kind=SessionKind.ORCHESTRATOR, env={"EXPEDITOR_FAKE_LOG": str(log)}
    )
    argv: list[str] = []
    environment: dict[str, str] = {}
    config_text = ""
    async with open_runtime(settings, env=server_env) as runtime, anyio.create_task_group() as group:
        handle = runtime.supervisor.start(group, request, CallerContext(None, None))
        with anyio.fail_after(20):
            while not (log.exists() and [e for e in read_invocation_log(log) if e["event"] == "launch"]):
                await anyio.sleep(0.02)
        (launch,) = [entry for entry in read_invocation_log(log) if entry["event"] == "launch"]
        agent = psutil.Process(launch["pid"])
        argv, environment = agent.cmdline(), agent.environ()
        config_text = Path(argv[argv.index("--mcp-config") + 1]).read_text()
        handle.cancel("the test has seen enough", grace=0.05)
        with anyio.fail_after(20):
            await handle.result()

    nested = json.loads(config_text)["mcpServers"]["expeditor"]
    assert nested["env"]["EXPEDITOR_STORE_URL"] == without_password(pg_database_url)
    assert environment["PGPASSFILE"] == str(passfile)  # what the nested server inherits through the CLI
    assert "EXPEDITOR_STORE_URL" not in environment
    assert "PGPASSWORD" not in environment
    assert password not in config_text
    assert not any(password in part for part in argv)
    assert not any(password in value for value in environment.values())
