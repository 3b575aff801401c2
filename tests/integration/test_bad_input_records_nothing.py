"""Bad input is refused with a clear message and leaves no record, process or marker behind."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mcp import Client
from mcp.types import TextContent

from expeditor.errors import InvalidInput
from expeditor.executor import RunRequest
from expeditor.ids import MAX_IDENTIFIER_LENGTH, validate_identifier
from expeditor.recipes.run import RecipeRun, run_recipe
from expeditor.runs import build_executor
from expeditor.runs.caller import CallerContext
from expeditor.runs.supervisor import Supervisor
from expeditor.server.app import build_server
from expeditor.state import SqliteCampaignStore
from expeditor.testing import read_invocation_log
from tests.support.fake import FAKE_AGENT_COMMAND, fake_settings

pytestmark = pytest.mark.anyio


async def test_a_run_outside_the_allowed_roots_is_refused_before_it_is_recorded(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    store = SqliteCampaignStore(settings.state_path)
    try:
        supervisor = Supervisor(settings, build_executor(settings), store=store)
        with pytest.raises(InvalidInput, match="outside the allowed roots"):
            await supervisor.run(RunRequest(prompt="/x", cwd=Path("/")), CallerContext(None, None))
        assert store.list_runs() == []
        assert supervisor.live == {}
    finally:
        store.close()


async def test_a_dispatch_into_a_missing_directory_claims_nothing(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    env = {**os.environ, "CLAUDE_CODE_SESSION_ID": str(uuid.uuid4())}
    async with Client(build_server(settings, env=env)) as client:
        arguments = {"campaign": "c", "name": "j", "recipe": "demo", "inputs": {}, "cwd": str(tmp_path / "missing")}
        refused = await client.call_tool("dispatch", arguments)
        assert refused.is_error
        text = " ".join(block.text for block in refused.content if isinstance(block, TextContent))
        assert "does not exist" in text
    store = SqliteCampaignStore(settings.state_path)
    try:
        assert store.list("c") == []
        assert store.list_runs() == []
    finally:
        store.close()
    assert not list(settings.markers_path.glob("*.marker"))


def test_recipe_run_outside_the_allowed_roots_records_nothing(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    with pytest.raises(InvalidInput, match="outside the allowed roots"):
        run_recipe(settings, RecipeRun(recipe="demo", inputs={}, campaign_id="c", cwd=Path("/")))
    # Refused before the store was opened: nothing was claimed, so nothing can be left running.
    assert not settings.state_path.exists()


async def test_a_prompt_too_long_for_the_cli_fails_the_dispatch_saying_why(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    env = {**os.environ, "CLAUDE_CODE_SESSION_ID": str(uuid.uuid4())}
    async with Client(build_server(settings, env=env)) as client:
        huge = {"problem": "a" * 140_000}
        arguments = {"campaign": "c", "name": "j", "recipe": "diagnose", "inputs": huge, "cwd": str(tmp_path)}
        refused = await client.call_tool("dispatch", arguments)
        assert refused.is_error
    store = SqliteCampaignStore(settings.state_path)
    try:
        record = store.get("c", "j")
        assert record is not None
        assert record.status.value == "failure"
        assert "expected at most" in (record.error or "")
        assert store.list_runs() == []
    finally:
        store.close()


def recorded_rows(state_path: Path) -> dict[str, int]:
    """How many rows each table of the store holds (none when the store was never created)."""
    if not state_path.exists():
        return {}
    with contextlib.closing(sqlite3.connect(state_path)) as connection:
        tables = ("dispatches", "runs", "step_executions")
        return {table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables}


def assert_one_clear_line(message: str, *expected: str) -> None:
    assert "\n" not in message.strip()
    assert len(message) < 300, message
    for part in expected:
        assert part in message


def expeditor_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "EXPEDITOR_CLAUDE_COMMAND": FAKE_AGENT_COMMAND,
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
        "EXPEDITOR_FAKE_SCENARIO": json.dumps({"steps": [{"result": "done"}]}),
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
    }
    return subprocess.run(
        [sys.executable, "-m", "expeditor", "--home", str(tmp_path / "home"), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def outside_directories(tmp_path: Path, outside: Path) -> dict[str, Path]:
    """Directories that lead outside the allowed root ``tmp_path``: the file system root, and a symlink inside it."""
    link = tmp_path / "looks-inside"
    link.symlink_to(outside, target_is_directory=True)
    return {"root": Path("/"), "symlink": link}


@pytest.mark.parametrize("which", ["root", "symlink"])
async def test_run_skill_with_an_added_directory_outside_the_allowed_roots_launches_nothing(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, which: str
) -> None:
    settings = fake_settings(tmp_path)
    add_dir = outside_directories(tmp_path, tmp_path_factory.mktemp("outside"))[which]
    env = {**os.environ, "CLAUDE_CODE_SESSION_ID": str(uuid.uuid4()), "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log")}
    async with Client(build_server(settings, env=env)) as client:
        arguments = {"skill_command": "/x", "cwd": str(tmp_path), "add_dirs": [str(add_dir)]}
        refused = await client.call_tool("run_skill", arguments)
    assert refused.is_error
    text = " ".join(block.text for block in refused.content if isinstance(block, TextContent))
    assert_one_clear_line(text, "add_dirs entry", "is outside the allowed roots", str(add_dir.resolve()))
    assert not (tmp_path / "agent.log").exists()
    assert sum(recorded_rows(settings.state_path).values()) == 0


@pytest.mark.parametrize("which", ["root", "symlink"])
def test_the_command_line_refuses_an_added_directory_outside_the_allowed_roots(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, which: str
) -> None:
    add_dir = outside_directories(tmp_path, tmp_path_factory.mktemp("outside"))[which]
    done = expeditor_cli(tmp_path, "run-skill", "/x", "--cwd", str(tmp_path), "--add-dir", str(add_dir))
    assert done.returncode == 2
    assert_one_clear_line(done.stderr, "add_dirs entry", "is outside the allowed roots")
    assert done.stdout == ""
    assert not (tmp_path / "agent.log").exists()
    assert sum(recorded_rows(tmp_path / "home" / "state.sqlite3").values()) == 0


async def test_an_added_directory_inside_the_allowed_roots_reaches_the_agent_resolved(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    (tmp_path / "shared").mkdir()
    (tmp_path / "link-to-shared").symlink_to(tmp_path / "shared", target_is_directory=True)
    env = {
        **os.environ,
        "CLAUDE_CODE_SESSION_ID": str(uuid.uuid4()),
        "EXPEDITOR_FAKE_SCENARIO": json.dumps({"steps": [{"result": "done"}]}),
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
    }
    async with Client(build_server(settings, env=env)) as client:
        arguments = {"skill_command": "/x", "cwd": str(tmp_path), "add_dirs": [str(tmp_path / "link-to-shared")]}
        result = await client.call_tool("run_skill", arguments)
    assert not result.is_error
    (launch,) = [entry for entry in read_invocation_log(tmp_path / "agent.log") if entry["event"] == "launch"]
    argv: list[str] = launch["argv"]
    assert argv[argv.index("--add-dir") + 1] == str((tmp_path / "shared").resolve())


LONG = "a" * 5000
DISPATCH_JOB = {"campaign": "c", "name": "j", "recipe": "diagnose", "inputs": {"problem": "p"}}


@pytest.mark.parametrize(("field", "what"), [("campaign", "campaign"), ("name", "job name"), ("recipe", "recipe name")])
async def test_a_dispatch_with_an_over_long_name_is_refused_and_records_nothing(
    tmp_path: Path, field: str, what: str
) -> None:
    settings = fake_settings(tmp_path)
    env = {**os.environ, "CLAUDE_CODE_SESSION_ID": str(uuid.uuid4()), "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log")}
    async with Client(build_server(settings, env=env)) as client:
        refused = await client.call_tool("dispatch", {**DISPATCH_JOB, field: LONG, "cwd": str(tmp_path)})
    assert refused.is_error
    text = " ".join(block.text for block in refused.content if isinstance(block, TextContent))
    assert_one_clear_line(text, f"{what} 'aaa", "is 5000 characters long: expected at most")
    assert not (tmp_path / "agent.log").exists()
    assert sum(recorded_rows(settings.state_path).values()) == 0


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (("dispatch", LONG, "j", "--recipe", "diagnose", "--input", "problem=p"), "campaign"),
        (("dispatch", "c", LONG, "--recipe", "diagnose", "--input", "problem=p"), "job name"),
        (("dispatch", "c", "j", "--recipe", LONG, "--input", "problem=p"), "recipe name"),
        (("recipe", "run", "demo", "--campaign", LONG), "campaign"),
        (("recipe", "run", "demo", "--job", LONG), "job name"),
        (("recipe", "run", LONG), "recipe name"),
    ],
    ids=["dispatch-campaign", "dispatch-job", "dispatch-recipe", "run-campaign", "run-job", "run-recipe"],
)
def test_the_command_line_refuses_an_over_long_name_and_records_nothing(
    tmp_path: Path, args: tuple[str, ...], what: str
) -> None:
    done = expeditor_cli(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    assert_one_clear_line(done.stderr, f"{what} 'aaa", "is 5000 characters long: expected at most")
    assert not (tmp_path / "agent.log").exists()
    assert sum(recorded_rows(tmp_path / "home" / "state.sqlite3").values()) == 0


def test_a_name_at_the_bound_is_accepted_and_one_past_it_is_refused() -> None:
    assert validate_identifier("c" * MAX_IDENTIFIER_LENGTH, what="campaign") == "c" * MAX_IDENTIFIER_LENGTH
    with pytest.raises(InvalidInput, match=f"campaign 'c+'... is {MAX_IDENTIFIER_LENGTH + 1} characters long"):
        validate_identifier("c" * (MAX_IDENTIFIER_LENGTH + 1), what="campaign")
