"""What a person sees while a pipeline runs: live table on a terminal, timestamped lines otherwise."""

from __future__ import annotations

import io
import json
import time

from rich.console import Console

from expeditor.recipes.progress import LinesProgress, LiveProgress, StreamJsonProgress, summary_text
from expeditor.state import StepExecution, StepStatus
from expeditor.usage import SessionUsage, TokenUsage


def execution(sequence: int, step: str, status: StepStatus, tokens: int = 0, **fields: object) -> StepExecution:
    usage = SessionUsage(total=TokenUsage(input_tokens=tokens))
    now = time.time()
    return StepExecution.model_validate(
        {
            "campaign_id": "c",
            "job_name": "j",
            "sequence": sequence,
            "step": step,
            "status": status,
            "usage": usage,
            "started_at": now - 2,
            "finished_at": now,
            "attempts": 1,
            **fields,
        }
    )


def test_lines_say_what_started_ended_and_the_tokens_so_far() -> None:
    out = io.StringIO()
    progress = LinesProgress(out)
    progress.replayed(execution(1, "plan", StepStatus.SUCCESS, 100))
    progress.step_started(2, "build", 2, "abc", "/build x")
    progress.step_finished(execution(2, "build", StepStatus.FAILURE, 1500, reason="stale: silent 30s"), None)
    lines = out.getvalue().splitlines()
    assert "step 1 plan: success (recorded earlier; not run again)" in lines[0]
    assert "step 2 build: started, attempt 2 (session abc): /build x" in lines[1]
    assert "step 2 build: failure in 2.0s, 1,500 tokens (1,600 so far): stale: silent 30s" in lines[2]


class FixedView:
    def last_activity(self, session_id: str) -> float | None:
        return time.time() - 3

    def tokens_so_far(self, session_id: str) -> int:
        return 1_000


def test_the_live_table_shows_the_running_step_its_last_activity_and_tokens_so_far() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    progress = LiveProgress(console, FixedView())
    progress.replayed(execution(1, "plan", StepStatus.SUCCESS, 2500))
    progress.step_started(2, "build", 1, "abc", "/build x")
    console.print(progress._render())  # pyright: ignore[reportPrivateUsage]
    text = buffer.getvalue()
    for expected in ("build", "running", "3.0s ago", "3,500"):
        assert expected in text


def test_stream_json_progress_ends_as_the_parent_parses_it() -> None:
    out = io.StringIO()
    progress = StreamJsonProgress(out, "run-1")
    progress.step_started(1, "plan", 1, "abc", "/plan")
    progress.emit({"type": "result", "subtype": "success", "is_error": False, "result": "done"})
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [event["type"] for event in events] == ["expeditor_step", "result"]
    assert {event["session_id"] for event in events} == {"run-1"}


def test_the_summary_text_marks_replayed_executions_and_lists_captures() -> None:
    executions = [
        execution(1, "plan", StepStatus.SUCCESS, captures={"plan": "ship"}),
        execution(2, "build", StepStatus.SUCCESS),
    ]
    assert summary_text(executions, replayed=1) == "1. plan: success (recorded earlier) [plan=ship]\n2. build: success"
