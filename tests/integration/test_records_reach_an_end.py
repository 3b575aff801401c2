"""Every claimed record reaches an end: whatever happens to the store or to its owner, no job stays "running".

Real SQLite files, real processes: the fake agent as the dispatched orchestrator, ``expeditor serve`` and
``expeditor dispatch`` as the processes that own the records, and a home that is really read-only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from mcp import Client, StdioServerParameters

from expeditor.server.app import build_server
from expeditor.state import DispatchStatus, RunStatus, SqliteCampaignStore
from expeditor.testing import read_invocation_log
from tests.support.fake import FAKE_AGENT_COMMAND, fake_settings
from tests.support.read_only_home import CANNOT_MAKE_READ_ONLY

pytestmark = pytest.mark.anyio

REPOSITORY = Path(__file__).resolve().parents[2]

FLAG = "orchestrator-started.flag"
# Says it started (a file the test waits for), then works long enough for the test to wreck the store.
HANGS_BRIEFLY = {
    "steps": [
        {"write_file": {"path": FLAG, "text": "started"}},
        {"assistant": "Working on it."},
        {"sleep": 1.5},
        {"assistant": "Done: the cache layer drops writes."},
        {"result": {}},
    ]
}
FINISHES = {"steps": [{"assistant": "Done."}, {"result": {}}]}
HANGS = {"steps": [{"write_file": {"path": FLAG, "text": "started"}}, {"hang": True}]}
JOB: dict[str, Any] = {"campaign": "c1", "name": "job1", "recipe": "diagnose", "inputs": {"problem": "flaky"}}


def launches(tmp_path: Path) -> list[dict[str, Any]]:
    return [entry for entry in read_invocation_log(tmp_path / "agent.log") if entry["event"] == "launch"]


def agent_env(tmp_path: Path, orchestrator: dict[str, Any]) -> dict[str, str]:
    return {
        **os.environ,
        "CLAUDE_CODE_SESSION_ID": str(uuid.uuid4()),
        "EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR": json.dumps(orchestrator),
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
    }


def process_env(tmp_path: Path, orchestrator: dict[str, Any]) -> dict[str, str]:
    """The environment of an expeditor process (serve, dispatch) with the fake agent and a home under tmp_path."""
    return {
        **agent_env(tmp_path, orchestrator),
        "EXPEDITOR_HOME": str(tmp_path / "home"),
        "EXPEDITOR_CLAUDE_COMMAND": FAKE_AGENT_COMMAND,
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
    }


def dispatch_command(tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "expeditor",
        "dispatch",
        "c1",
        "job1",
        "--recipe",
        "diagnose",
        "--input",
        "problem=flaky",
        "--cwd",
        str(tmp_path),
        *extra,
    ]


async def started(tmp_path: Path) -> None:
    """Once the orchestrator said it started: another process's progress shows only in its files."""
    with anyio.fail_after(20):
        while not (tmp_path / FLAG).exists():
            await anyio.sleep(0.02)


def state_files(home: Path) -> list[Path]:
    return [home / name for name in ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm")]


def replace_with_garbage(home: Path) -> None:
    """Another program writes garbage where the store was (a new file under its name, as editors and sync
    tools do); its write-ahead log is left where it was."""
    replacement = home / "replacement"
    replacement.write_bytes(os.urandom(64 * 1024))
    replacement.rename(home / "state.sqlite3")


def delete_store(home: Path) -> None:
    for path in state_files(home):
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("wreck", ["corrupted", "deleted"])
async def test_a_store_wrecked_mid_run_gets_the_finished_run_back_and_the_repeat_short_circuits(
    tmp_path: Path, wreck: str
) -> None:
    settings = fake_settings(tmp_path)
    home = settings.home
    outcome: dict[str, Any] = {}
    async with Client(build_server(settings, env=agent_env(tmp_path, HANGS_BRIEFLY))) as client:

        async def dispatch() -> None:
            result = await client.call_tool("dispatch", {**JOB, "cwd": str(tmp_path)})
            assert not result.is_error, result.content
            assert result.structured_content is not None
            outcome.update(result.structured_content)

        async with anyio.create_task_group() as group:
            group.start_soon(dispatch)
            await started(tmp_path)
            replace_with_garbage(home) if wreck == "corrupted" else delete_store(home)
        assert outcome["status"] == "success", outcome["message"]
        assert outcome["record_error"] is None
        assert outcome["result"]["termination"] == "completed"

        repeat = await client.call_tool("dispatch", {**JOB, "cwd": str(tmp_path)})
        assert repeat.structured_content is not None, repeat.content
        assert repeat.structured_content["short_circuited"] is True
        assert repeat.structured_content["dispatched_session_id"] == outcome["dispatched_session_id"]
    assert len(launches(tmp_path)) == 1  # the repeat launched nothing

    # Kept, not deleted (SQLite may have replayed the old write-ahead log into it on the way).
    moved_aside = [path for path in home.glob("state.sqlite3.corrupt-*") if not path.name.endswith(("-wal", "-shm"))]
    assert len(moved_aside) == (1 if wreck == "corrupted" else 0)
    store = SqliteCampaignStore(settings.state_path)
    try:
        record = store.get("c1", "job1")
        assert record is not None
        assert (record.status, record.attempts) == (DispatchStatus.SUCCESS, 1)
        assert record.dispatch_id == outcome["dispatch_id"]
        assert record.dispatched_session_id == outcome["dispatched_session_id"]
        assert "drops writes" in (record.result_summary or "")
        (run,) = store.list_runs("c1", job_name="job1")
        assert (run.run_id, run.status, run.dispatch_id) == (
            outcome["dispatched_session_id"],
            RunStatus.SUCCESS,
            outcome["dispatch_id"],
        )
    finally:
        store.close()


def test_a_finished_run_whose_end_no_store_would_take_exits_1_with_its_result_not_2(tmp_path: Path) -> None:
    home = tmp_path / "home"
    dispatcher = subprocess.Popen(
        dispatch_command(tmp_path),
        env=process_env(tmp_path, HANGS_BRIEFLY),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / FLAG).exists():  # another process's progress shows only in its files
            assert time.monotonic() < deadline, "the dispatched orchestrator never started"
            time.sleep(0.02)
        delete_store(home)
        (home / "state.sqlite3").mkdir()  # where the store was, no store can be opened or created now
        stdout, stderr = dispatcher.communicate(timeout=60)
    finally:
        if dispatcher.poll() is None:
            dispatcher.kill()
            dispatcher.communicate()
    # The run finished and succeeded; only its record is missing: exit 1 with the result shown, never 2.
    assert dispatcher.returncode == 1, stderr
    assert "c1/job1: success" in stdout
    (launch,) = launches(tmp_path)
    assert launch["session_id"] in stdout  # the RunResult table, with the session it ran
    assert "reported its result" in stdout
    assert "could not be recorded" in stderr
    assert "invalid input" not in stderr


async def test_a_finished_run_whose_end_no_store_would_take_is_returned_by_the_tool_with_the_reason(
    tmp_path: Path,
) -> None:
    settings = fake_settings(tmp_path)
    outcome: dict[str, Any] = {}
    async with Client(build_server(settings, env=agent_env(tmp_path, HANGS_BRIEFLY))) as client:

        async def dispatch() -> None:
            result = await client.call_tool("dispatch", {**JOB, "cwd": str(tmp_path)})
            assert not result.is_error, result.content  # a finished run is no tool error, least of all bad input
            assert result.structured_content is not None
            outcome.update(result.structured_content)

        async with anyio.create_task_group() as group:
            group.start_soon(dispatch)
            await started(tmp_path)
            delete_store(settings.home)
            settings.state_path.mkdir()
    assert outcome["status"] == "success"
    assert outcome["result"]["termination"] == "completed"
    assert "could not be recorded" in outcome["record_error"]
    assert "the next dispatch may run it again" in outcome["message"]


def serve_parameters(tmp_path: Path, orchestrator: dict[str, Any]) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "expeditor", "serve"], env=process_env(tmp_path, orchestrator)
    )


def serve_process() -> psutil.Process:
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.cmdline()[-2:] == ["expeditor", "serve"]:
                return child
    raise AssertionError("no expeditor serve process found")


async def _dispatch_until_disconnected(client: Client, tmp_path: Path) -> None:
    with contextlib.suppress(Exception):  # the server is killed under this call
        await client.call_tool("dispatch", {**JOB, "cwd": str(tmp_path)})


async def test_after_a_server_sigkill_the_next_start_lists_its_job_and_run_interrupted(tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(Client(serve_parameters(tmp_path, HANGS)))
        group = await stack.enter_async_context(anyio.create_task_group())
        group.start_soon(_dispatch_until_disconnected, client, tmp_path)
        await started(tmp_path)
        serve_process().kill()
        group.cancel_scope.cancel()
    (launch,) = launches(tmp_path)

    async with Client(build_server(fake_settings(tmp_path), env=agent_env(tmp_path, FINISHES))) as client:
        listed = await client.call_tool("list_dispatches", {"campaign": "c1"})
    assert listed.structured_content is not None, listed.content
    (job,) = listed.structured_content["jobs"]
    assert (job["name"], job["status"], job["attempts"]) == ("job1", "interrupted", 1)
    assert job["dispatched_session_id"] == launch["session_id"]
    assert "is gone" in job["error"]
    store = SqliteCampaignStore(tmp_path / "home" / "state.sqlite3")
    try:
        (run,) = store.list_runs("c1", job_name="job1")
        assert (run.run_id, run.status) == (launch["session_id"], RunStatus.INTERRUPTED)
    finally:
        store.close()
    assert len(launches(tmp_path)) == 1  # starting up interrupts; it relaunches nothing


def cannot_make_read_only(why: str) -> None:
    message = f"cannot make a home read-only here: {why}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def read_only(home: Path) -> Generator[Callable[[list[str]], list[str]]]:
    """Yield what runs a command with ``home`` read-only to it.

    As root, whom file modes do not stop, the command runs in a mount namespace of its own where ``home``
    is a read-only bind mount; otherwise ``home`` and its files lose their write permissions meanwhile.
    """
    if os.geteuid() != 0:
        paths = [home, *home.rglob("*")]
        modes = {path: path.stat().st_mode for path in paths}
        for path in paths:
            path.chmod(modes[path] & ~0o222)
        try:
            yield lambda command: command
        finally:
            for path in paths:
                path.chmod(modes[path])
        return
    unshare = shutil.which("unshare")
    if unshare is None:
        cannot_make_read_only("running as root, and there is no unshare(1) for a private read-only bind mount")
    wrapper = [
        str(unshare),
        "--mount",
        "--propagation",
        "private",
        sys.executable,
        "-m",
        "tests.support.read_only_home",
    ]
    yield lambda command: [*wrapper, str(home), "--", *command]


def test_a_repeat_of_a_success_short_circuits_on_a_read_only_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = process_env(tmp_path, FINISHES)
    first = subprocess.run(dispatch_command(tmp_path), env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    with read_only(home) as wrap:
        repeat = subprocess.run(
            wrap(dispatch_command(tmp_path, "--json")),
            env=env,
            cwd=REPOSITORY,  # where tests.support is importable from
            capture_output=True,
            text=True,
            check=False,
        )
    if repeat.returncode == CANNOT_MAKE_READ_ONLY:
        cannot_make_read_only(repeat.stderr.strip())
    assert repeat.returncode == 0, repeat.stderr
    outcome = json.loads(repeat.stdout)
    assert (outcome["status"], outcome["short_circuited"], outcome["attempts"]) == ("success", True, 1)
    assert "read-only" in repeat.stderr or "Read-only" in repeat.stderr or "Permission denied" in repeat.stderr
    assert len(launches(tmp_path)) == 1  # nothing ran again
