"""The run service: one runtime per process, one way to launch a supervised run, handles that can be polled."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from expeditor.dispatch import DispatchService
from expeditor.errors import InvalidInput
from expeditor.executor import RunControl, RunRequest, Termination
from expeditor.runs import CallerContext, open_runtime
from expeditor.server.app import build_server
from expeditor.state import DispatchStatus, RunStatus
from tests.support.fake import fake_settings, scenario_request

pytestmark = pytest.mark.anyio

CALLER = str(uuid.uuid4())
DONE = [{"assistant": "done"}, {"result": {}}]


def markers(marker_dir: Path) -> list[Path]:
    return sorted(marker_dir.glob("*.marker")) if marker_dir.exists() else []


async def test_a_started_run_can_be_polled_then_awaited(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    request = scenario_request(tmp_path, {"steps": [{"sleep": 0.5}, *DONE]})
    async with open_runtime(settings) as runtime, anyio.create_task_group() as group:
        handle = runtime.supervisor.start(group, request, CallerContext(CALLER, None), marker="run-skill")
        assert not handle.done
        with anyio.fail_after(10):
            await handle.control.started.wait()
        assert handle.status().startswith(f"session {handle.session_id} running")
        assert [path.name.split("-in-progress-")[0] for path in markers(settings.markers_path)] == ["run-skill"]
        result = await handle.result()
        assert handle.done
        assert result.success, result.reason
        assert result.session_id == handle.session_id
        record = runtime.store.get_run(handle.session_id)
        assert record is not None
        assert record.status is RunStatus.SUCCESS
    assert markers(settings.markers_path) == []


async def test_cancelling_a_started_run_through_its_handle_kills_it_and_records_it_cancelled(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    request = scenario_request(tmp_path, {"steps": [{"sleep": 30}, *DONE]})
    async with open_runtime(settings) as runtime, anyio.create_task_group() as group:
        handle = runtime.supervisor.start(group, request, CallerContext(CALLER, None), marker="run-skill")
        with anyio.fail_after(10):
            await handle.control.started.wait()
        handle.cancel("stopped through its handle", grace=0.05)
        with anyio.fail_after(10):
            result = await handle.result()
        assert result.termination is Termination.CANCELLED
        assert result.reason == "stopped through its handle"
        record = runtime.store.get_run(handle.session_id)
        assert record is not None
        assert record.status is RunStatus.CANCELLED
        assert runtime.supervisor.live == {}
    assert markers(settings.markers_path) == []


async def test_a_launch_is_checked_before_anything_is_recorded_marked_or_started(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    async with open_runtime(settings) as runtime:
        with pytest.raises(InvalidInput, match="outside the allowed roots"):
            runtime.supervisor.prepare(
                RunRequest(prompt="/x", cwd=Path("/")), CallerContext(CALLER, None), marker="run-skill"
            )
        assert runtime.store.list_runs() == []
        assert runtime.supervisor.live == {}
    assert markers(settings.markers_path) == []


async def test_closing_the_runtime_stops_the_runs_still_in_flight(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path, shutdown_grace=0.05)
    request = scenario_request(tmp_path, {"steps": [{"sleep": 30}, *DONE]})
    async with anyio.create_task_group() as group:
        async with open_runtime(settings, closing_reason="the test is over") as runtime:
            handle = runtime.supervisor.start(group, request, CallerContext(CALLER, None))
            with anyio.fail_after(10):
                await handle.control.started.wait()
        assert handle.done  # closing waited for it
        result = await handle.result()
    assert result.termination is Termination.CANCELLED
    assert result.reason == "the test is over"


def dispatch_env(tmp_path: Path) -> dict[str, str]:
    # Each orchestrator keeps writing for a while, so each call has progress of its own to report.
    orchestrator = {"steps": [{"tick": {"interval": 0.1, "duration": 1.5, "to": "both"}}, *DONE]}
    return {
        **os.environ,
        "CLAUDE_CODE_SESSION_ID": CALLER,
        "EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR": json.dumps(orchestrator),
    }


async def test_two_concurrent_dispatches_from_one_caller_each_report_their_own_progress(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path, progress_interval=0.2)
    messages: dict[str, list[str]] = {"job-a": [], "job-b": []}
    outcomes: dict[str, dict[str, Any]] = {}
    async with Client(build_server(settings, env=dispatch_env(tmp_path))) as client:

        async def dispatch(name: str) -> None:
            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                messages[name].append(message or "")

            arguments = {"campaign": "c", "name": name, "recipe": "diagnose", "inputs": {"problem": name}}
            result = await client.call_tool(
                "dispatch", {**arguments, "cwd": str(tmp_path)}, progress_callback=on_progress
            )
            assert result.structured_content is not None
            outcomes[name] = result.structured_content

        async with anyio.create_task_group() as group:
            group.start_soon(dispatch, "job-a")
            group.start_soon(dispatch, "job-b")
    for name, outcome in outcomes.items():
        own, other = (
            outcome["dispatched_session_id"],
            outcomes["job-b" if name == "job-a" else "job-a"]["dispatched_session_id"],
        )
        about_sessions = [message for message in messages[name] if " session " in message]
        assert about_sessions, messages[name]
        assert all(message.startswith(f"c/{name}: ") for message in messages[name])
        assert all(f"session {own} " in message for message in about_sessions), about_sessions
        assert not any(other in message for message in messages[name])


async def test_a_second_run_of_a_session_in_flight_is_refused(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    first = scenario_request(tmp_path, {"steps": [{"sleep": 30}, *DONE]})
    async with open_runtime(settings) as runtime, anyio.create_task_group() as group:
        handle = runtime.supervisor.start(group, first, CallerContext(CALLER, None))
        with anyio.fail_after(10):
            await handle.control.started.wait()
        again = scenario_request(tmp_path, {"steps": DONE}, resume_session_id=handle.session_id)
        with pytest.raises(InvalidInput, match="already running under this server"):
            runtime.supervisor.prepare(again, CallerContext(CALLER, None))
        assert list(runtime.supervisor.live) == [handle.session_id]
        handle.cancel("the test is over", grace=0.05)
        await handle.result()


def orchestrator_env(scenario: dict[str, Any]) -> dict[str, str]:
    return {**os.environ, "EXPEDITOR_FAKE_SCENARIO_ORCHESTRATOR": json.dumps(scenario)}


async def test_a_dispatch_cancelled_while_its_successful_session_is_recorded_stays_a_success(
    tmp_path: Path,
) -> None:
    settings = fake_settings(tmp_path)
    async with open_runtime(settings, env=orchestrator_env({"steps": DONE})) as runtime:
        service = DispatchService(runtime)
        store = runtime.store
        record_run_finished = store.record_run_finished
        with anyio.CancelScope() as call:

            def cancelled_while_recording(*args: Any, **kwargs: Any) -> Any:
                # The client gives up on its call while the run's end is being written (shielded).
                anyio.from_thread.run_sync(call.cancel)
                return record_run_finished(*args, **kwargs)

            store.record_run_finished = cancelled_while_recording  # type: ignore[method-assign]
            await service.dispatch(
                "c", "j", "diagnose", {"problem": "p"}, caller=CallerContext(None, None), cwd=tmp_path
            )
        store.record_run_finished = record_run_finished  # type: ignore[method-assign]
        assert call.cancel_called
        record = store.get("c", "j")
        assert record is not None
        assert record.status is DispatchStatus.SUCCESS
        again = await service.dispatch(
            "c", "j", "diagnose", {"problem": "p"}, caller=CallerContext(None, None), cwd=tmp_path
        )
        assert again.short_circuited


async def test_a_dispatch_cancelled_while_waiting_for_a_slot_is_recorded_cancelled(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path, max_concurrent_dispatches=1)
    slow = {"steps": [{"sleep": 30}, *DONE]}
    async with open_runtime(settings, env=orchestrator_env(slow)) as runtime, anyio.create_task_group() as group:
        service = DispatchService(runtime)
        caller = CallerContext(None, None)
        first = RunControl()

        async def dispatch_first() -> None:
            await service.dispatch(
                "c", "first", "diagnose", {"problem": "p"}, caller=caller, cwd=tmp_path, control=first
            )

        group.start_soon(dispatch_first)
        with anyio.fail_after(10):
            await first.started.wait()
        with anyio.CancelScope() as waiting:

            async def cancel_once_claimed() -> None:
                with anyio.fail_after(10):
                    while runtime.store.get("c", "second") is None:
                        await anyio.sleep(0.01)
                waiting.cancel()

            group.start_soon(cancel_once_claimed)
            await service.dispatch("c", "second", "diagnose", {"problem": "p"}, caller=caller, cwd=tmp_path)
        second = runtime.store.get("c", "second")
        assert second is not None
        assert second.status is DispatchStatus.CANCELLED
        first.cancel("the test is over", grace=0.05)
