"""One headless session end to end: the real executor and runner, the fake agent as a real process."""

from __future__ import annotations

import signal
from pathlib import Path
from types import SimpleNamespace

import anyio
import psutil
import pytest

from expeditor.executor import (
    RunControl,
    RunRequest,
    RunResult,
    SessionKind,
    SessionRegistry,
    Termination,
)
from expeditor.runs import build_executor
from expeditor.testing import read_invocation_log
from expeditor.usage import UsageSource
from tests.support.fake import fake_settings, scenario_request

pytestmark = pytest.mark.anyio

SESSION_ID = "6f1d2c3b-4a59-4e7f-8a1b-2c3d4e5f6a7b"

REPLY = {
    "assistant": {
        "content": "All done.",
        "usage": {"input": 11, "output": 7, "cache_read": 100, "cache_write": 20},
    }
}


def assert_all_gone(pids: list[int]) -> None:
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == []


async def test_a_session_that_reports_and_exits_is_completed(tmp_path: Path) -> None:
    executor = build_executor(fake_settings(tmp_path))
    request = scenario_request(tmp_path, {"steps": [REPLY, {"result": {}}]}, session_id=SESSION_ID, model="sonnet")
    result = await executor.run(request, marker_dir=None, caller_session_id="caller-9")
    assert result.success
    assert result.termination is Termination.COMPLETED
    assert result.result_text == "All done."
    assert result.session_id == SESSION_ID
    assert result.caller_session_id == "caller-9"
    assert result.exit_code == 0
    assert result.usage.source is UsageSource.RESULT_EVENT
    assert (result.usage.total.input_tokens, result.usage.total.output_tokens) == (11, 7)
    assert result.usage.total.peak_context == 131
    assert result.transcript_path is not None
    assert result.transcript_path.exists()
    assert result.killed == []


async def test_the_child_learns_its_id_its_caller_and_the_marker_dir(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    executor = build_executor(
        fake_settings(tmp_path), env={"PATH": "/usr/bin:/bin", "CLAUDE_CODE_SESSION_ID": "parent-cc"}
    )
    request = scenario_request(
        tmp_path,
        {"steps": [REPLY, {"result": {}}]},
        kind=SessionKind.ORCHESTRATOR,
        env={"EXPEDITOR_FAKE_LOG": str(log)},
    )
    result = await executor.run(request, marker_dir=tmp_path / "markers", caller_session_id="caller-9")
    (launch,) = [entry for entry in read_invocation_log(log) if entry["event"] == "launch"]
    assert launch["session_id"] == result.session_id
    assert launch["env"]["EXPEDITOR_SESSION_ID"] == result.session_id
    assert launch["env"]["EXPEDITOR_PARENT_SESSION_ID"] == "caller-9"
    assert launch["env"]["EXPEDITOR_MARKER_DIR"] == str(tmp_path / "markers")
    assert launch["env"]["EXPEDITOR_SESSION_KIND"] == "orchestrator"
    assert "CLAUDE_CODE_SESSION_ID" not in launch["env"]
    assert launch["argv"][launch["argv"].index("--session-id") + 1] == result.session_id


async def test_a_result_followed_by_a_process_that_never_exits_is_still_a_success(tmp_path: Path) -> None:
    executor = build_executor(fake_settings(tmp_path, result_exit_grace=0.2))
    request = scenario_request(tmp_path, {"steps": [REPLY, {"result": {}}, {"hang": True}]})
    result = await executor.run(request, marker_dir=None, caller_session_id=None)
    assert result.success
    assert result.termination is Termination.COMPLETED
    assert result.decided_by.value == "result"
    assert [k.signal for k in result.killed] == ["SIGTERM"]
    assert_all_gone([k.pid for k in result.killed])


async def test_an_exit_without_a_result_is_crashed_with_the_stderr_tail(tmp_path: Path) -> None:
    executor = build_executor(fake_settings(tmp_path))
    request = scenario_request(tmp_path, {"steps": [REPLY, {"stderr": "API Error: 529 overloaded"}, {"exit": 1}]})
    result = await executor.run(request, marker_dir=None, caller_session_id=None)
    assert not result.success
    assert result.termination is Termination.CRASHED
    assert result.exit_code == 1
    assert "529 overloaded" in result.stderr_tail
    assert "without a result event" in result.reason
    # The session died before its result event: usage comes from the transcript, marked partial.
    assert result.usage.source is UsageSource.TRANSCRIPT
    assert result.usage.partial
    assert result.usage.total.output_tokens == 7


async def test_an_error_result_is_completed_but_not_a_success(tmp_path: Path) -> None:
    executor = build_executor(fake_settings(tmp_path))
    request = scenario_request(
        tmp_path, {"steps": [REPLY, {"result": {"is_error": True, "text": "Credit balance too low"}}]}
    )
    result = await executor.run(request, marker_dir=None, caller_session_id=None)
    assert result.termination is Termination.COMPLETED
    assert result.is_error
    assert not result.success
    assert "Credit balance too low" in result.reason


async def test_a_missing_binary_is_launch_failed_naming_the_command(tmp_path: Path) -> None:
    executor = build_executor(fake_settings(tmp_path, claude_command="/nonexistent/claude-code --x"))
    result = await executor.run(scenario_request(tmp_path, {}), marker_dir=None, caller_session_id=None)
    assert result.termination is Termination.LAUNCH_FAILED
    assert not result.success
    assert "/nonexistent/claude-code" in result.reason


async def test_the_wall_clock_limit_gives_timeout(tmp_path: Path) -> None:
    executor = build_executor(fake_settings(tmp_path))
    request = scenario_request(tmp_path, {"steps": [{"tick": {"interval": 0.05, "duration": 30}}]}, timeout=0.5)
    result = await executor.run(request, marker_dir=None, caller_session_id=None)
    assert result.termination is Termination.TIMEOUT
    assert "wall-clock limit of 0.5s" in result.reason
    assert 0.5 <= result.duration_s < 2.0
    assert_all_gone([k.pid for k in result.killed])


async def test_caller_cancellation_kills_the_tree_and_records_cancelled(tmp_path: Path) -> None:
    executor = build_executor(fake_settings(tmp_path))
    control = RunControl()
    request = scenario_request(tmp_path, {"steps": [{"spawn": {"sleep": 60}}, {"hang": True}]})
    async with anyio.create_task_group() as group:

        async def cancel_when_started() -> None:
            await control.started.wait()
            group.cancel_scope.cancel()

        group.start_soon(cancel_when_started)
        await executor.run(request, marker_dir=None, caller_session_id=None, control=control)
    assert control.outcome is not None
    assert control.outcome.verdict.termination is Termination.CANCELLED
    assert_all_gone([k.pid for k in control.outcome.killed])


async def test_run_control_cancel_returns_a_cancelled_result(tmp_path: Path) -> None:
    executor = build_executor(fake_settings(tmp_path))
    control = RunControl()
    request = scenario_request(tmp_path, {"steps": [{"hang": True}]})
    result: RunResult | None = None
    async with anyio.create_task_group() as group:

        async def cancel_when_started() -> None:
            await control.started.wait()
            control.cancel("server shutting down (SIGTERM)", grace=0.05)

        group.start_soon(cancel_when_started)
        result = await executor.run(request, marker_dir=None, caller_session_id=None, control=control)
    assert result is not None
    assert result.termination is Termination.CANCELLED
    assert result.reason == "server shutting down (SIGTERM)"
    assert not result.success


async def test_a_session_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    # The timeout leaves the agent time to start and install its handler on a busy machine (its
    # interpreter can take a second): a SIGTERM before that would end it, not test the grace.
    executor = build_executor(fake_settings(tmp_path, kill_grace=0.3))
    request = scenario_request(tmp_path, {"ignore_sigterm": True, "steps": [{"hang": True}]}, timeout=2.0)
    result = await executor.run(request, marker_dir=None, caller_session_id=None)
    assert result.termination is Termination.TIMEOUT
    assert [k.signal for k in result.killed] == ["SIGKILL"]
    assert result.exit_code == -signal.SIGKILL
    assert 2.3 <= result.duration_s < 5
    assert_all_gone([k.pid for k in result.killed])


@pytest.mark.parametrize("shape", ["plain", "setsid", "double_fork", "ignore_sigterm"])
async def test_nothing_of_the_tree_survives_a_killed_run(tmp_path: Path, shape: str) -> None:
    log = tmp_path / "agent.log"
    spawn = {"sleep": 60, "count": 2, shape: True} if shape != "plain" else {"sleep": 60, "count": 2}
    executor = build_executor(fake_settings(tmp_path, kill_grace=0.2))
    request = scenario_request(
        tmp_path, {"steps": [{"spawn": spawn}, {"hang": True}]}, env={"EXPEDITOR_FAKE_LOG": str(log)}
    )
    control = RunControl()

    def spawned_pids() -> list[int]:
        return [entry["pid"] for entry in read_invocation_log(log) if entry["event"] == "spawned"]

    async def kill_once_both_run() -> None:
        # Killed once both children run, not after a wall-clock limit: on a busy machine the agent's
        # interpreter can still be starting when a small timeout fires, and there is no tree to kill yet.
        with anyio.fail_after(30):
            while len(spawned_pids()) < 2:
                await anyio.sleep(0.02)
        control.cancel("the test kills the run")

    result: RunResult | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(kill_once_both_run)
        result = await executor.run(request, marker_dir=None, caller_session_id=None, control=control)
    assert result is not None
    assert result.termination is Termination.CANCELLED
    spawned = spawned_pids()
    assert len(spawned) == 2
    assert set(spawned) <= {k.pid for k in result.killed}
    assert_all_gone(spawned + [k.pid for k in result.killed])
    if shape in ("setsid", "double_fork"):
        assert all(k.escaped for k in result.killed if k.pid in spawned)


@pytest.mark.parametrize("shape", ["plain", "setsid", "double_fork"])
async def test_a_completed_session_leaves_nothing_behind(tmp_path: Path, shape: str) -> None:
    log = tmp_path / "agent.log"
    spawn = {"sleep": 60, shape: True, "close_stdio": True} if shape != "plain" else {"sleep": 60, "close_stdio": True}
    executor = build_executor(fake_settings(tmp_path))
    request = scenario_request(
        tmp_path, {"steps": [{"spawn": spawn}, REPLY, {"result": {}}]}, env={"EXPEDITOR_FAKE_LOG": str(log)}
    )
    result = await executor.run(request, marker_dir=None, caller_session_id=None)
    assert result.success
    (leftover,) = [entry["pid"] for entry in read_invocation_log(log) if entry["event"] == "spawned"]
    assert [k.pid for k in result.killed] == [leftover]
    assert_all_gone([leftover])


async def test_the_registry_holds_the_live_session_and_forgets_it_at_exit(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    executor = build_executor(settings)
    registry = SessionRegistry(settings.sessions_dir)
    control = RunControl()
    request = scenario_request(tmp_path, {"steps": [{"hang": True}]}, session_id=SESSION_ID)
    async with anyio.create_task_group() as group:

        async def inspect_then_cancel() -> None:
            await control.started.wait()
            (entry,) = registry.entries()
            assert (entry.session_id, entry.caller_session_id, entry.run_id) == (
                SESSION_ID,
                "caller-2",
                SESSION_ID,
            )
            assert entry.session_alive()
            assert entry.owner_alive()
            control.cancel("done looking", grace=0.05)

        group.start_soon(inspect_then_cancel)
        await executor.run(request, marker_dir=None, caller_session_id="caller-2", control=control)
    assert registry.entries() == []


async def test_a_denied_tool_call_is_reported_in_the_result(tmp_path: Path) -> None:
    executor = build_executor(fake_settings(tmp_path))
    mcp_config = {"mcpServers": {"expeditor": {"command": "true", "args": []}}}
    steps = [{"call_tool": {"server": "expeditor", "tool": "run_skill"}}, REPLY, {"result": {}}]
    request = scenario_request(tmp_path, {"steps": steps}, mcp_config=mcp_config)
    result = await executor.run(request, marker_dir=None, caller_session_id=None)
    assert result.success
    assert result.permission_denials == ["mcp__expeditor__run_skill"]


async def test_a_cancel_after_the_result_event_still_counts_the_work_as_done(tmp_path: Path) -> None:
    # Cancelled while it lingers after reporting (the exit grace): its work must not be paid for again.
    executor = build_executor(fake_settings(tmp_path, result_exit_grace=5))
    request = scenario_request(tmp_path, {"init": False, "steps": [{"result": "all done"}, {"sleep": 30}]})
    control = RunControl()

    async def cancel_once_reported() -> None:
        await control.started.wait()
        assert control.session is not None
        with anyio.fail_after(10):
            while control.session.stdout_bytes == 0:  # the result is its only output
                await anyio.sleep(0.02)
        control.cancel("the server is shutting down")

    async with anyio.create_task_group() as group:
        group.start_soon(cancel_once_reported)
        result = await executor.run(request, marker_dir=None, caller_session_id=None, control=control)
    assert result.success
    assert result.termination is Termination.COMPLETED
    assert result.result_text == "all done"
    assert "the server is shutting down" in result.reason


class _CollectedAlready:
    """psutil's view of a process the event loop's child watcher collected before the runner looked."""

    def __init__(self, pid: int) -> None:
        raise psutil.NoSuchProcess(pid)


@pytest.mark.parametrize("command", ["plain", "agent"])
async def test_a_session_collected_before_it_could_be_watched_is_judged_by_its_exit(
    tmp_path: Path, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A command that runs in a millisecond can be gone, exit status collected, before the runner looks at
    # it (seen under load: /bin/true reported as launch_failed). It ran: its exit and its output judge it.
    import expeditor.executor.runner as runner

    # Only the runner's first look is replaced (its module's psutil), not psutil itself.
    monkeypatch.setattr(runner, "psutil", SimpleNamespace(Process=_CollectedAlready, Error=psutil.Error))
    executor = build_executor(fake_settings(tmp_path))
    if command == "plain":
        request = RunRequest(prompt="/echo", cwd=tmp_path, argv=("/bin/echo", "printed"))
    else:
        request = scenario_request(tmp_path, {"steps": [REPLY, {"result": {}}]})
    result = await executor.run(request, marker_dir=None, caller_session_id=None)
    assert result.termination is Termination.COMPLETED
    assert result.success
    assert result.exit_code == 0
    assert result.result_text == ("printed" if command == "plain" else "All done.")
