"""The fake agent: an executable that behaves like ``claude -p`` (headless Claude Code), driven by a scenario.

Every runner and watcher test, and the demo, launches this instead of the real CLI, through the same
command line expeditor builds for Claude Code. So the command line is checked like Claude Code checks
it: an unknown option, a missing ``--verbose`` with stream-json, or ``--session-id`` with ``--resume``
fails at once with Claude Code's message and exit status 1, and a caller's argv bug shows in tests.

What the session then does comes from its scenario (``scenario.py``), found as ``scenario_source.py``
says (the environment, a file per command, or the prompt), else a default reply ``Done: <prompt>``.
A malformed scenario exits 2 with every problem named. SIGTERM exits 143 (unless the scenario
ignores it), SIGINT 130. When ``EXPEDITOR_FAKE_LOG`` is set, each launch, spawned child, signal
and exit is appended there as one JSON line: the invocation log tests assert from. The
``system/init`` event lists the skills the real CLI would find: ``<cwd>/.claude/skills`` and,
namespaced by plugin, those of each ``--plugin-dir``.

Run it as ``expeditor-fake-agent`` or ``python -m expeditor.testing.fake_agent``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from expeditor.claude_paths import project_dir
from expeditor.errors import ScenarioError
from expeditor.testing.channels import Channels, InvocationLog
from expeditor.testing.conversation import Conversation, Tokens, resolve_model
from expeditor.testing.mcp_call import McpServer, load_mcp_configs
from expeditor.testing.scenario_source import scenario_for
from expeditor.testing.skills import skills_found

if TYPE_CHECKING:
    pass

__all__ = ["build_parser", "main", "run"]

DEFAULT_MODEL = "claude-sonnet-4-5"
PERMISSION_MODES = ("acceptEdits", "auto", "bypassPermissions", "manual", "dontAsk", "plan")
BUILTIN_TOOLS = ("Task", "Bash", "Edit", "NotebookEdit", "Read", "Skill", "WebFetch", "WebSearch", "Write")
_RULE = re.compile(r"[^\s,(]+(?:\([^)]*\))?")


class _Refused(Exception):
    """The command line was refused before the session started: print the message, exit 1."""


class _Parser(argparse.ArgumentParser):
    """argparse that fails like Claude Code's commander: ``error: …`` on stderr, exit status 1."""

    def error(self, message: str) -> NoReturn:
        raise _Refused(f"error: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The Claude Code options expeditor may pass; anything else is refused as unknown."""
    p = _Parser(prog="claude", description="Fake Claude Code (headless only).", allow_abbrev=False, add_help=True)
    p.add_argument("prompt", nargs="?", help="the prompt; read from stdin when absent")
    p.add_argument("-p", "--print", action="store_true", dest="print_mode", help="headless: print and exit")
    p.add_argument("--output-format", choices=("text", "json", "stream-json"), default="text")
    p.add_argument("--input-format", choices=("text", "stream-json"), default="text")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--session-id")
    p.add_argument("-r", "--resume", metavar="SESSION_ID")
    p.add_argument("--fork-session", action="store_true")
    p.add_argument("-c", "--continue", action="store_true", dest="continue_session")
    p.add_argument("--model")
    p.add_argument("--mcp-config", action="extend", nargs="+", default=[], metavar="CONFIG")
    p.add_argument("--strict-mcp-config", action="store_true")
    p.add_argument("--allowedTools", "--allowed-tools", action="extend", nargs="+", default=[], dest="allowed")
    p.add_argument("--disallowedTools", "--disallowed-tools", action="extend", nargs="+", default=[], dest="denied")
    p.add_argument("--permission-mode", choices=PERMISSION_MODES)
    p.add_argument("--add-dir", action="extend", nargs="+", default=[])
    p.add_argument("--plugin-dir", action="extend", nargs="+", default=[])
    p.add_argument("--append-system-prompt")
    p.add_argument("--system-prompt")
    p.add_argument("--max-turns", type=int)
    p.add_argument("--json-schema", metavar="SCHEMA", help="taken as given; a result step's structured_output answers")
    p.add_argument("--max-budget-usd", type=float, help="end with error_max_budget_usd once the cost reaches it")
    p.add_argument("--dangerously-skip-permissions", action="store_true")
    p.add_argument("--settings")
    return p


def _parse(argv: list[str]) -> argparse.Namespace:
    args, extra = build_parser().parse_known_args(argv)
    for item in extra:
        if item.startswith("-"):
            raise _Refused(f"error: unknown option '{item}'")
    if extra:
        raise _Refused(f"error: too many arguments. Expected 1 argument but got {len(extra) + 1}.")
    if not args.print_mode:
        raise _Refused("Error: the fake agent runs headless only: pass -p/--print")
    if args.output_format == "stream-json" and not args.verbose:
        raise _Refused("Error: When using --print, --output-format=stream-json requires --verbose")
    return args


def _prompt(args: argparse.Namespace) -> str:
    """The prompt argument, else stdin (plain text, or the first user message of stream-json input)."""
    if args.prompt is not None and args.input_format == "text":
        return args.prompt
    text = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    if args.input_format == "stream-json":
        for line in filter(str.strip, text.splitlines()):
            try:
                message = json.loads(line)
            except ValueError as exc:
                raise _Refused(f"Error: stdin is not stream-json: {exc}: {line[:80]!r}") from exc
            if isinstance(message, dict) and message.get("type") == "user":
                content = message.get("message", {}).get("content", "")
                return content if isinstance(content, str) else " ".join(b.get("text", "") for b in content)
        text = ""
    if not text.strip():
        raise _Refused("Error: Input must be provided either through stdin or as a prompt argument when using --print")
    return text.rstrip("\n")


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def _session(args: argparse.Namespace, project: Path) -> tuple[str, Path | None]:
    """The session id and, when forking, the transcript whose history the new one starts with."""
    if args.session_id and (args.resume or args.continue_session) and not args.fork_session:
        raise _Refused("Error: --session-id with --continue or --resume also needs --fork-session.")
    if args.session_id and not _is_uuid(args.session_id):
        raise _Refused("Error: Invalid session ID. Must be a valid UUID.")
    resumed: str | None = None
    if args.resume:
        if not _is_uuid(args.resume):
            raise _Refused(
                "Error: --resume requires a valid session ID or session title when used with --print. "
                f'Usage: claude -p --resume <session-id|title>. Provided value "{args.resume}" is not a UUID '
                "and does not match any session title."
            )
        if not (project / f"{args.resume}.jsonl").is_file():
            raise _Refused(f"No conversation found with session ID: {args.resume}")
        resumed = args.resume
    elif args.continue_session:
        newest = max(project.glob("*.jsonl"), key=lambda path: path.stat().st_mtime, default=None)
        resumed = newest.stem if newest else None
    if resumed and not args.fork_session:
        return resumed, None
    session_id = args.session_id or str(uuid.uuid4())
    if (project / f"{session_id}.jsonl").exists():
        raise _Refused(f"Error: Session ID {session_id} is already in use.")
    return session_id, (project / f"{resumed}.jsonl") if resumed else None


def _rules(values: list[str]) -> list[str]:
    """Tool rules as Claude Code splits them: by commas or spaces, keeping ``Bash(git log:*)`` whole."""
    return [rule for value in values for rule in _RULE.findall(value)]


def _settings_rules(value: str | None) -> tuple[list[str], list[str]]:
    """``permissions.allow`` and ``permissions.deny`` of ``--settings`` (a file or inline JSON)."""
    if not value:
        return [], []
    try:
        text = value if value.lstrip().startswith("{") else Path(value).read_text()
        permissions = json.loads(text).get("permissions", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise _Refused(f"Error: Invalid settings: {exc}") from exc
    return list(permissions.get("allow", [])), list(permissions.get("deny", []))


def _exit_on_signal(log: InvocationLog) -> None:
    """SIGTERM → 143, SIGINT → 130, at once, like Claude Code; the log notes which signal ended us."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.write("signal", signal=signal.Signals(signum).name, ignored=False)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _ignore_sigterm(log: InvocationLog) -> None:
    """A handler, not SIG_IGN: children exec'd after this must not inherit an ignored SIGTERM."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        os.write(2, b"fake agent: ignoring SIGTERM\n")  # not sys.stderr: the handler may interrupt a write
        log.write("signal", signal="SIGTERM", ignored=True)

    signal.signal(signal.SIGTERM, handler)


def _config_dir() -> Path:
    configured = os.environ.get("CLAUDE_CONFIG_DIR")
    return Path(configured) if configured else Path.home() / ".claude"


def _watched_env() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if key.startswith("EXPEDITOR_") or key == "CLAUDE_CODE_SESSION_ID"
    }


class _Launch(NamedTuple):
    """What the command line decided before any output: the session, its files, its permissions."""

    args: argparse.Namespace
    prompt: str
    session_id: str
    transcript: Path
    fork_from: Path | None
    mcp_servers: dict[str, McpServer]
    allow: list[str]
    deny: list[str]


def _launch(argv: list[str], cwd: str) -> _Launch:
    """Check the command line like Claude Code does; raises _Refused with its message."""
    args = _parse(argv)
    prompt = _prompt(args)
    try:
        mcp_servers = load_mcp_configs(args.mcp_config)
    except ValueError as exc:
        raise _Refused(f"Error: Invalid MCP configuration:\n{exc}") from exc
    allow, deny = _settings_rules(args.settings)
    project = project_dir(_config_dir(), cwd)
    session_id, fork_from = _session(args, project)
    allow += _rules(args.allowed)
    deny += _rules(args.denied)
    return _Launch(args, prompt, session_id, project / f"{session_id}.jsonl", fork_from, mcp_servers, allow, deny)


def run(argv: list[str]) -> int:
    """Run one fake session and return its exit status."""
    started = time.monotonic()
    log = InvocationLog(os.environ.get("EXPEDITOR_FAKE_LOG"))
    _exit_on_signal(log)
    cwd = os.getcwd()
    launch: _Launch | None = None
    try:
        launch = _launch(argv, cwd)
    except _Refused as refusal:
        print(refusal, file=sys.stderr)
    session_id = launch.session_id if launch else None
    log.write("launch", argv=[sys.argv[0], *argv], session_id=session_id, cwd=cwd, env=_watched_env())
    if launch is None:
        return _finish(log, 1)
    try:
        scenario = scenario_for(launch.prompt)
    except ScenarioError as exc:
        print(f"fake agent: {exc}", file=sys.stderr)
        return _finish(log, 2)
    if scenario is not None and scenario.ignore_sigterm:
        _ignore_sigterm(log)
    args = launch.args
    conversation = Conversation(
        session_id=launch.session_id,
        cwd=cwd,
        model=resolve_model((scenario.model if scenario else None) or args.model or DEFAULT_MODEL),
        prompt=launch.prompt,
        out=Channels(launch.transcript),
        output_format=args.output_format,
        started=started,
        max_budget_usd=args.max_budget_usd,
        prior_cost_usd=_prior_cost(launch.transcript) if launch.fork_from is None else 0.0,
    )
    if launch.fork_from is not None:
        _copy_history(launch.fork_from, conversation)
    bypass = args.dangerously_skip_permissions or args.permission_mode == "bypassPermissions"
    if scenario is None or scenario.init:
        skills, plugins = skills_found(cwd, args.plugin_dir)
        conversation.init(
            tools=[tool for tool in BUILTIN_TOOLS if tool not in launch.deny],
            mcp_servers=list(launch.mcp_servers),
            permission_mode="bypassPermissions" if bypass else args.permission_mode or "default",
            skills=skills,
            plugins=plugins,
        )
    conversation.user_prompt()
    if scenario is None:  # the default: answer, succeed
        conversation.assistant([{"type": "text", "text": f"Done: {launch.prompt}"}], Tokens())
        conversation.result()
        code = 0
    else:
        from expeditor.testing.steps import Runtime, run_steps

        runtime = Runtime(conversation, log, launch.mcp_servers, launch.allow, launch.deny, bypass)
        code = run_steps(scenario, runtime)
    return _finish(log, code)


def _prior_cost(transcript: Path) -> float:
    """A resumed session's cost so far: the last ``cost-state`` line of its transcript (0 for a new session)."""
    cost = 0.0
    lines = transcript.read_text().splitlines() if transcript.is_file() else []
    for line in lines:
        if '"cost-state"' in line:
            try:
                cost = float(json.loads(line)["totalCostUSD"])
            except (ValueError, KeyError, TypeError):
                continue
    return cost


def _finish(log: InvocationLog, code: int) -> int:
    log.write("exit", code=code)
    return code


def _copy_history(source: Path, conversation: Conversation) -> None:
    """A forked session's transcript starts with the resumed one's lines, re-labelled with the new id."""
    for line in filter(str.strip, source.read_text().splitlines()):
        try:
            record: Any = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and "sessionId" in record:
            record["sessionId"] = conversation.session_id
            conversation.out.transcript_line(record)  # pyright: ignore[reportUnknownArgumentType]
        else:
            conversation.out.transcript_line(line)


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point (``expeditor-fake-agent``)."""
    sys.exit(run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
