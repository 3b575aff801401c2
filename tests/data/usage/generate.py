"""Regenerate the stream-json and transcript files of the usage golden test with the fake agent.

    .venv/bin/python tests/data/usage/generate.py

Each launch's stdout goes to ``<name>.stdout.jsonl`` and its transcript, as it was when the launch
ended, to ``<name>.transcript.jsonl``: a resumed session's file still holds the earlier launch's
lines, and ``sessions.json`` records where each launch started in it, as the runner does. Ids and
timestamps change on every run; the token figures, and so ``report.md``, do not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from expeditor.claude_paths import transcript_path

HERE = Path(__file__).resolve().parent


def usage(inp: int, out: int, read: int, write: int) -> dict[str, int]:
    return {"input": inp, "output": out, "cache_read": read, "cache_write": write}


def reply(usage_: dict[str, int], text: str, tool: str | None = None) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"text": text}]
    if tool is not None:
        content.append({"tool_use": {"name": tool, "input": {}}})
    return {"assistant": {"content": content, "usage": usage_}}


# What Claude Code writes to the transcript when an API call fails: a made-up reply, not a turn.
SYNTHETIC_API_ERROR = {
    "type": "assistant",
    "message": {
        "id": "0f3c2a71-5d8e-4b6a-9c1f-2e7d8a4b5c6d",
        "model": "<synthetic>",
        "role": "assistant",
        "stop_reason": "stop_sequence",
        "stop_sequence": "",
        "type": "message",
        "usage": {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
        "content": [{"type": "text", "text": "API Error: Connection error."}],
    },
    "isApiErrorMessage": True,
}

# (file name, step, model, resumes the previous launch of the step, scenario)
LAUNCHES: list[tuple[str, str, str, bool, dict[str, Any]]] = [
    (
        "plan",
        "plan",
        "opus",
        False,
        {
            "steps": [
                reply(usage(11, 7, 1000, 200), "Reading the issue.", tool="Read"),  # two blocks, one message
                {"tool_result": "# cache"},
                reply(usage(3, 820, 1320, 4512), "Plan written to plan.md."),
                {"result": {}},
            ]
        },
    ),
    (
        "implement-1",
        "implement",
        "sonnet",
        False,
        {
            "steps": [
                reply(usage(5, 950, 48_000, 12_000), "Editing the cache layer.", tool="Edit"),
                {"tool_result": "ok"},
                reply(usage(2, 1400, 60_000, 3000), "Running the tests.", tool="Bash"),
            ],
            "exit_code": 1,  # crashed: no result event
        },
    ),
    (
        "implement-2",
        "implement",
        "sonnet",
        True,
        {
            "steps": [
                reply(usage(4, 2100, 75_000, 2500), "Resuming: the eviction test failed.", tool="Edit"),
                {"tool_result": "ok"},
                reply(usage(1, 300, 77_600, 900), "Fixed; the tests pass."),
                # A long session, as its result event sums it up.
                {"result": {"usage": usage(1893, 5250, 39_512_345, 984_950), "num_turns": 87}},
            ]
        },
    ),
    (
        "review-1",
        "review",
        "sonnet",
        False,
        {"steps": [reply(usage(8, 512, 31_000, 6000), "Sound; one nit."), {"result": {}}]},
    ),
    (
        "review-2",
        "review",
        "sonnet",
        True,
        {
            "steps": [
                reply(usage(3, 487, 37_000, 800), "Checking the nit.", tool="Read"),
                {"transcript_only": [SYNTHETIC_API_ERROR]},
            ],
            "exit_code": 1,  # crashed after an API error: no result event
        },
    ),
    (
        "summarize",
        "summarize",
        "glm-4.6",
        False,
        {"steps": [reply(usage(12_345, 1000, 0, 0), "Fixed the cache eviction race."), {"result": {}}]},
    ),
]


def main() -> None:
    sessions: list[dict[str, Any]] = []
    session_of_step: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        config, cwd = Path(scratch) / "claude", Path(scratch) / "project"
        cwd.mkdir()
        for name, step, model, resumes, scenario in LAUNCHES:
            session_id = session_of_step[step] if resumes else str(uuid.uuid4())
            session_of_step[step] = session_id
            transcript = transcript_path(config, cwd, session_id)
            offset = transcript.stat().st_size if resumes else 0
            session_flag = ["--resume", session_id] if resumes else ["--session-id", session_id]
            command = [sys.executable, "-m", "expeditor.testing.fake_agent", "-p", f"/{step}"]
            command += ["--output-format", "stream-json", "--verbose", "--model", model, *session_flag]
            environment = {
                **os.environ,
                "CLAUDE_CONFIG_DIR": str(config),
                "EXPEDITOR_FAKE_SCENARIO": json.dumps(scenario),
            }
            completed = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, check=False)
            (HERE / f"{name}.stdout.jsonl").write_bytes(completed.stdout)
            shutil.copyfile(transcript, HERE / f"{name}.transcript.jsonl")
            sessions.append(
                {
                    "name": name,
                    "step": step,
                    "session_id": session_id,
                    "model": model,
                    "transcript_offset": offset,
                    "exit_code": completed.returncode,
                }
            )
    (HERE / "sessions.json").write_text(json.dumps(sessions, indent=2) + "\n")


if __name__ == "__main__":
    main()
