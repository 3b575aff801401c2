"""The fake agent as its callers see it: a real process, its stdout, its transcript, its invocation log.

Signals, spawned children and MCP calls are in ``test_fake_agent_processes.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from expeditor.testing import (
    fake_agent_command,
    fake_agent_env,
    read_invocation_log,
    stream_events,
    transcript_path,
)

TWO_TURNS = {
    "steps": [
        {
            "assistant": {
                "content": [
                    {"text": "Let me check."},
                    {"tool_use": {"name": "Bash", "input": {"command": "ls"}}},
                ],
                "usage": {"input": 11, "output": 7, "cache_read": 1000, "cache_write": 200},
            }
        },
        {"tool_result": "README.md"},
        {
            "assistant": {
                "content": "All done.",
                "usage": {"input": 11, "output": 7, "cache_read": 1000, "cache_write": 200},
            }
        },
        {"result": None},
    ]
}


class Agent:
    """Runs the fake agent to completion in one working directory, with its own config dir and log."""

    def __init__(self, tmp_path: Path) -> None:
        self.config = tmp_path / "config"
        self.log = tmp_path / "invocations.jsonl"
        self.cwd = tmp_path / "work"
        self.cwd.mkdir()

    def run(self, *args: str, scenario: str | None = None, extra_env: dict[str, str] | None = None) -> Run:
        env = fake_agent_env(os.environ, config_dir=self.config, log=self.log, scenario=scenario)
        env.update(extra_env or {})
        done = subprocess.run(
            [*fake_agent_command(), *args],
            cwd=self.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        return Run(done, self)

    def stream(
        self, prompt: str, *args: str, scenario: str | None = None, extra_env: dict[str, str] | None = None
    ) -> Run:
        return self.run(
            "-p", prompt, "--output-format", "stream-json", "--verbose", *args, scenario=scenario, extra_env=extra_env
        )


class Run:
    """One finished run: exit status, stream-json events, and the transcript of its session."""

    def __init__(self, done: subprocess.CompletedProcess[str], agent: Agent) -> None:
        self.code = done.returncode
        self.stdout = done.stdout
        self.stderr = done.stderr
        self.agent = agent

    @property
    def events(self) -> list[dict[str, Any]]:
        return stream_events(self.stdout)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == kind]

    @property
    def session_id(self) -> str:
        return str(self.events[-1]["session_id"])

    @property
    def result(self) -> dict[str, Any]:
        (result,) = self.of_type("result")
        return result

    def transcript(self) -> list[dict[str, Any]]:
        path = transcript_path(self.agent.config, self.agent.cwd, self.session_id)
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return Agent(tmp_path)


def test_default_run_replies_succeeds_and_writes_the_transcript_under_the_mangled_cwd(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    agent.cwd = tmp_path / "my.project_dir with space"
    agent.cwd.mkdir()

    run = agent.stream("hello there")

    assert run.code == 0, run.stderr
    assert [event["type"] for event in run.events] == ["system", "assistant", "result"]
    init, reply, result = run.events
    assert init["subtype"] == "init"
    assert init["cwd"] == str(agent.cwd)
    assert init["model"] == "claude-sonnet-4-5"
    assert uuid.UUID(init["session_id"])
    assert reply["message"]["content"] == [{"type": "text", "text": "Done: hello there"}]
    assert result["subtype"] == "success"
    assert result["is_error"] is False
    assert result["result"] == "Done: hello there"
    assert {init["session_id"], reply["session_id"], result["session_id"]} == {run.session_id}

    mangled = str(agent.cwd).replace("/", "-").replace(".", "-").replace("_", "-").replace(" ", "-")
    transcript = agent.config / "projects" / mangled / f"{run.session_id}.jsonl"
    lines = [json.loads(line) for line in transcript.read_text().splitlines()]
    # As 2.1.332 does, the session ends its transcript with its cost so far (a resume adds to it).
    assert [line["type"] for line in lines] == ["user", "assistant", "cost-state"]
    assert lines[2]["totalCostUSD"] == result["total_cost_usd"]
    assert lines[0]["message"] == {"role": "user", "content": "hello there"}
    for line in lines[:2]:
        assert line["sessionId"] == run.session_id
        assert line["cwd"] == str(agent.cwd)
        assert {"uuid", "timestamp", "message"} <= line.keys()


def test_a_two_block_reply_repeats_its_id_with_opening_usage_but_the_result_counts_it_once(
    agent: Agent,
) -> None:
    run = agent.stream("go", scenario=json.dumps(TWO_TURNS))

    assert run.code == 0, run.stderr
    first, second, third = run.of_type("assistant")
    assert first["message"]["id"] == second["message"]["id"] != third["message"]["id"]
    opening = {
        "input_tokens": 11,
        "output_tokens": 1,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 200,
    }
    assert first["message"]["usage"] == second["message"]["usage"] == opening
    assert [block["type"] for event in (first, second) for block in event["message"]["content"]] == [
        "text",
        "tool_use",
    ]
    (tool_result,) = run.of_type("user")
    tool_use_id = second["message"]["content"][0]["id"]
    assert tool_result["message"]["content"][0]["tool_use_id"] == tool_use_id

    result = run.result
    assert result["num_turns"] == 2
    assert result["result"] == "All done."
    assert result["usage"] == {
        "input_tokens": 22,
        "output_tokens": 14,
        "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 400,
    }
    model_usage = result["modelUsage"]["claude-sonnet-4-5"]
    assert (model_usage["inputTokens"], model_usage["outputTokens"]) == (22, 14)
    assert result["total_cost_usd"] == pytest.approx(0.002376)

    written = [line for line in run.transcript() if line["type"] == "assistant"]
    assert [line["message"]["id"] for line in written] == [event["message"]["id"] for event in (first, second, third)]
    assert {line["message"]["usage"]["output_tokens"] for line in written} == {7}


SCENARIO_YAML = """\
model: opus
exit_code: 3
steps:
  - assistant: "from the scenario"
  - result: {text: "scripted result"}
"""


@pytest.mark.parametrize("source", ["env file", "env inline YAML", "file per command", "prompt JSON"])
def test_the_scenario_comes_from_a_file_inline_yaml_or_the_prompt(agent: Agent, tmp_path: Path, source: str) -> None:
    prompt, scenario, extra_env = "/make-plan 42", None, None
    if source == "file per command":
        (tmp_path / "scenarios").mkdir()
        (tmp_path / "scenarios" / "make-plan.yaml").write_text(SCENARIO_YAML)
        (tmp_path / "scenarios" / "other.yaml").write_text("steps: [{exit: 9}]")
        extra_env = {"EXPEDITOR_FAKE_SCENARIO_DIR": str(tmp_path / "scenarios")}
    elif source == "env file":
        scenario_file = tmp_path / "scenario.yaml"
        scenario_file.write_text(SCENARIO_YAML)
        scenario = str(scenario_file)
    elif source == "env inline YAML":
        scenario = SCENARIO_YAML
    else:
        as_json = {
            "model": "opus",
            "exit_code": 3,
            "steps": [{"assistant": "from the scenario"}, {"result": "scripted result"}],
        }
        prompt = f'/make-plan 42 {{"unrelated": true}} {json.dumps(as_json)} trailing words'

    run = agent.stream(prompt, scenario=scenario, extra_env=extra_env)

    assert run.code == 3, run.stderr
    (reply,) = run.of_type("assistant")
    assert reply["message"]["content"][0]["text"] == "from the scenario"
    assert reply["message"]["model"] == "claude-opus-4-5"
    assert run.result["result"] == "scripted result"


def test_a_bad_scenario_exits_2_naming_each_problem(agent: Agent) -> None:
    bad = '{"steps": [{"sleeep": 1}], "exit_code": 3}'
    run = agent.stream("x", scenario=bad)
    assert run.code == 2
    assert "step 0 has ['sleeep']" in run.stderr
    assert "one of assistant, tool_result, sleep" in run.stderr

    run = agent.stream("x", scenario="steps:\n  - sleep: soon\n  - assistant: {content: hi, colour: red}\nbogus: 1\n")
    assert run.code == 2
    assert "steps[0].sleep: Input should be a valid number" in run.stderr
    assert "steps[1].assistant.colour: Extra inputs are not permitted" in run.stderr
    assert "bogus: Extra inputs are not permitted" in run.stderr
    assert run.stdout == ""


SESSION = "11111111-1111-4111-8111-111111111111"
OTHER = "22222222-2222-4222-8222-222222222222"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "x", "--bogus"], "error: unknown option '--bogus'"),
        (["-p", "x", "--output-format", "stream-json"], "requires --verbose"),
        (["-p", "x", "--session-id", SESSION, "--resume", OTHER], "--fork-session."),
        (["-p", "x", "--session-id", "not-a-uuid"], "Error: Invalid session ID. Must be a valid UUID."),
        (["-p", "x", "--resume", OTHER], f"No conversation found with session ID: {OTHER}"),
        (["-p", "x", "--permission-mode", "yolo"], "invalid choice: 'yolo'"),
        (["-p", "x", "--mcp-config", "/nowhere.json"], "Error: Invalid MCP configuration:"),
        (["-p"], "Input must be provided either through stdin or as a prompt argument"),
    ],
)
def test_a_command_line_claude_code_refuses_fails_at_once_with_exit_1(
    agent: Agent, args: list[str], message: str
) -> None:
    run = agent.run(*args)
    assert run.code == 1
    assert message in run.stderr
    assert run.stdout == ""


def test_session_id_with_resume_prints_claude_codes_exact_error(agent: Agent) -> None:
    run = agent.run("-p", "x", "--session-id", SESSION, "--resume", OTHER)
    assert run.stderr == "Error: --session-id with --continue or --resume also needs --fork-session.\n"
    assert run.code == 1


def test_resume_keeps_the_session_id_and_appends_to_the_same_transcript(agent: Agent) -> None:
    first = agent.stream("first", "--session-id", SESSION)
    assert first.session_id == SESSION
    assert agent.stream("again", "--session-id", SESSION).stderr == f"Error: Session ID {SESSION} is already in use.\n"

    second = agent.stream("second", "--resume", SESSION)

    assert second.code == 0, second.stderr
    assert {event["session_id"] for event in second.events} == {SESSION}
    prompts = [line["message"]["content"] for line in second.transcript() if line["type"] == "user"]
    assert prompts == ["first", "second"]
    # Like 2.1.332, a resumed session's reported cost includes its earlier launches' (its tokens do not).
    before, after = first.events[-1], second.events[-1]
    own = sum(model["costUSD"] for model in after["modelUsage"].values())
    assert after["total_cost_usd"] == pytest.approx(before["total_cost_usd"] + own)


def test_fork_session_starts_a_new_transcript_with_a_copy_of_the_history(agent: Agent) -> None:
    agent.stream("first", "--session-id", SESSION)

    forked = agent.stream("second", "--resume", SESSION, "--fork-session", "--session-id", OTHER)

    assert forked.session_id == OTHER
    assert [line["message"]["content"] for line in forked.transcript() if line["type"] == "user"] == [
        "first",
        "second",
    ]
    assert {line["sessionId"] for line in forked.transcript()} == {OTHER}
    original = transcript_path(agent.config, agent.cwd, SESSION).read_text().splitlines()
    assert len(original) == 3  # user, assistant, cost-state


def test_text_output_prints_only_the_result_text(agent: Agent) -> None:
    run = agent.run("-p", "plain")
    assert (run.code, run.stdout) == (0, "Done: plain\n")


def test_one_sided_steps_move_only_their_own_signal(agent: Agent) -> None:
    scenario = {
        "init": False,
        "steps": [
            {"tick": {"interval": 0.05, "duration": 0.1, "to": "transcript"}},
            {"transcript_only": [{"type": "custom", "n": 1}, "not json at all"]},
            {"stdout_only": "plain stdout line"},
            {"raw_stdout": {"text": "x", "repeat": 3_000_000}},
            {"stderr": "to stderr"},
        ],
    }
    run = agent.stream("quiet", "--session-id", SESSION, scenario=json.dumps(scenario))

    assert run.code == 0, run.stderr
    assert run.stdout.splitlines() == ["plain stdout line", "x" * 3_000_000]
    assert run.stderr == "to stderr\n"
    lines = transcript_path(agent.config, agent.cwd, SESSION).read_text().splitlines()
    assert [json.loads(line).get("subtype") for line in lines[1:4]] == ["fake_tick"] * 3
    assert lines[4:] == ['{"type":"custom","n":1}', "not json at all"]


def test_the_invocation_log_records_each_launch_and_exit(agent: Agent) -> None:
    extra = {"EXPEDITOR_SESSION_ID": "child-1", "CLAUDE_CODE_SESSION_ID": "caller-9", "UNRELATED": "no"}
    agent.run("-p", "one", "--session-id", SESSION, extra_env=extra)
    agent.run("-p", "two", "--bogus")

    launch, exit_, refused_launch, refused_exit = read_invocation_log(agent.log)
    assert launch["event"] == "launch"
    assert launch["argv"][1:] == ["-p", "one", "--session-id", SESSION]
    assert launch["session_id"] == SESSION
    assert launch["cwd"] == str(agent.cwd)
    expected = {"EXPEDITOR_SESSION_ID": "child-1", "CLAUDE_CODE_SESSION_ID": "caller-9"}
    assert expected.items() <= launch["env"].items()
    assert all(key.startswith("EXPEDITOR_") for key in launch["env"].keys() - expected.keys())
    assert exit_ == {"event": "exit", "pid": launch["pid"], "code": 0, "time": exit_["time"]}
    assert (refused_launch["session_id"], refused_exit["code"]) == (None, 1)


def test_a_write_file_step_edits_the_project_and_a_path_leaving_it_is_refused(agent: Agent) -> None:
    scenario = json.dumps({"steps": [{"write_file": {"path": "src/app.py", "text": "x = 1\n"}}, {"result": "ok"}]})
    run = agent.stream("/build", scenario=scenario)
    assert run.code == 0, run.stderr
    assert (agent.cwd / "src" / "app.py").read_text() == "x = 1\n"
    escaping = json.dumps({"steps": [{"write_file": {"path": "../outside.py", "text": ""}}]})
    refused = agent.stream("/build", scenario=escaping)
    assert refused.code == 2
    assert "must stay inside the working directory" in refused.stderr
