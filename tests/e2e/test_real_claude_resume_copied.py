"""The pinned CLI resumes a session from a transcript copied into another config directory (another host).

What resume across hosts rests on (issue 27, item 8): a worker writes the stored transcript to
``transcript_path(<its config dir>, <its cwd>, <session id>)`` and launches ``claude -p --resume <id>``.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from expeditor.claude_paths import transcript_path
from tests.e2e.conftest import claude_offline_env
from tests.support.scripted_messages_api import Reply, ScriptedMessagesAPI

pytestmark = pytest.mark.real_claude

REMEMBERED = "PELICAN-4217"
FIRST_ANSWER = "Noted: OSPREY-9034"


def run_claude(cli: Path, env: dict[str, str], cwd: Path, *args: str) -> list[dict[str, Any]]:
    """``claude -p`` with stream-json output; its events, failing loudly on a bad exit."""
    command = [str(cli), "--output-format", "stream-json", "--verbose", *args]
    done = subprocess.run(
        command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, f"claude exited {done.returncode}: {done.stderr}\n{done.stdout}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


class Host:
    """One host's view: its own config directory, HOME and working directory."""

    def __init__(self, root: Path, cwd: Path) -> None:
        self.config_dir = root / "claude-config"
        self.home = root / "home"
        self.cwd = cwd
        for path in (self.config_dir, self.home, self.cwd):
            path.mkdir(parents=True, exist_ok=True)

    def env(self, api: ScriptedMessagesAPI) -> dict[str, str]:
        return claude_offline_env(api, self.config_dir, self.home)


def first_session(cli: Path, api: ScriptedMessagesAPI, host: Host) -> tuple[str, bytes]:
    """A one-turn session on ``host``; its id and its transcript's bytes."""
    session_id = str(uuid.uuid4())
    api.add(Reply.text(FIRST_ANSWER))
    run_claude(cli, host.env(api), host.cwd, "--session-id", session_id, "-p", f"Remember {REMEMBERED}.")
    return session_id, transcript_path(host.config_dir, host.cwd, session_id).read_bytes()


def resume_on(cli: Path, api: ScriptedMessagesAPI, host: Host, session_id: str, transcript: bytes) -> dict[str, Any]:
    """Write ``transcript`` where ``host``'s CLI looks for it, resume, and return the request it sent."""
    destination = transcript_path(host.config_dir, host.cwd, session_id)
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(transcript)
    api.add(Reply.text("Resumed."))
    already = len(api.main_requests)
    events = run_claude(cli, host.env(api), host.cwd, "--resume", session_id, "-p", "Which word?")
    init, result = events[0], events[-1]
    assert (init["type"], init["subtype"], init["session_id"]) == ("system", "init", session_id)
    assert (result["subtype"], result["is_error"], result["session_id"]) == ("success", False, session_id)
    [request] = api.main_requests[already:]
    assert request.session_id == session_id
    assert REMEMBERED in request.text
    assert FIRST_ANSWER in request.text
    assert request.body is not None
    return dict(request.body)


def test_a_transcript_copied_to_another_config_dir_at_the_same_cwd_resumes_the_conversation(
    claude_cli: Path, scripted_api: ScriptedMessagesAPI, tmp_path: Path
) -> None:
    checkout = tmp_path / "checkout"
    first = Host(tmp_path / "host-a", checkout)
    session_id, transcript = first_session(claude_cli, scripted_api, first)

    body = resume_on(claude_cli, scripted_api, Host(tmp_path / "host-b", checkout), session_id, transcript)

    roles = [message["role"] for message in body["messages"]]
    assert roles[-1] == "user"
    assert "Environment update" not in json.dumps(body["messages"])


def test_a_copied_transcript_resumes_at_another_cwd_and_a_torn_last_line_is_ignored(
    claude_cli: Path, scripted_api: ScriptedMessagesAPI, tmp_path: Path
) -> None:
    first = Host(tmp_path / "host-a", tmp_path / "host-a" / "work")
    session_id, transcript = first_session(claude_cli, scripted_api, first)
    other = Host(tmp_path / "host-b", tmp_path / "host-b" / "elsewhere")
    torn = transcript + b'{"type":"user","message":{"ro'

    body = resume_on(claude_cli, scripted_api, other, session_id, torn)

    # The CLI tells the model the working directory moved, naming both.
    [update] = [m for m in body["messages"] if "Environment update" in json.dumps(m)]
    assert str(other.cwd) in json.dumps(update)
    assert str(first.cwd) in json.dumps(update)
