"""The ``expeditor`` command line."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from expeditor import __version__
from expeditor.config import Settings, load_settings
from expeditor.errors import ExpeditorError, InvalidInput, Unusable
from expeditor.executor import RunRequest
from expeditor.logs import configure_logging
from expeditor.queue.commands import (
    add_cancel_command,
    add_worker_command,
    check_serving,
    dispatch_launcher,
    migrate_queue_too,
)
from expeditor.recipes.command_line import add_recipe_commands
from expeditor.worktree_commands import add_worktree_commands

__all__ = ["main"]

_DESCRIPTION = """\
expeditor supervises headless Claude Code sessions (claude -p): it runs skills and recipe
jobs as managed processes, kills a session that is truly stuck (with its whole process tree)
but never one that is waiting on a long tool call, records every run and job so finished
work is never rerun, and reports what each step cost in tokens.

Start with `expeditor demo` (no API key needed), then register it with Claude Code for every project:
claude mcp add --scope user expeditor -- /abs/path/to/expeditor serve"""

# 0: done; 1: it failed, or what was named does not exist or cannot be used; 2: the command line was wrong.
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(home=getattr(args, "home", None), **overrides)


def _run_skill(args: argparse.Namespace) -> int:
    from expeditor.runs.commands import run_skill_command

    settings = _settings(args)
    configure_logging(settings)
    request = RunRequest(
        prompt=args.command,
        cwd=Path(args.cwd),
        model=args.model,
        stale_threshold=args.stale_threshold,
        timeout=args.timeout,
        resume_session_id=args.resume,
        add_dirs=tuple(Path(d) for d in args.add_dir),
    )
    return run_skill_command(settings, request, sys.stdout, as_json=args.json)


def _status(args: argparse.Namespace) -> int:
    from expeditor.status import show_status

    settings = _settings(args)
    return show_status(settings, campaign=args.campaign, watch=args.watch, interval=args.interval, as_json=args.json)


def _demo(args: argparse.Namespace) -> int:
    from expeditor.demo import run_demo

    markdown = Path(args.markdown) if args.markdown else None
    if markdown is not None and not markdown.parent.is_dir():
        raise InvalidInput(f"--markdown {markdown}: the directory {markdown.parent} does not exist")
    return run_demo(markdown_out=markdown)


def _serve(args: argparse.Namespace) -> int:
    from expeditor.server.serve import serve

    settings = _settings(args)
    configure_logging(settings)
    check_serving(settings, os.environ)
    return serve(
        settings, transport=args.transport, host=args.host, port=args.port, insecure_no_token=args.insecure_no_token
    )


def _marker_hold(args: argparse.Namespace) -> int:
    from expeditor.monitor.marker_hold import marker_hold_command

    settings = _settings(args)
    return marker_hold_command(
        settings, args.argv, session_id=args.session, label=args.label, expires_in=args.expires_in
    )


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: expected a whole number from 1 to 65535")
    return int(text)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _dispatch(args: argparse.Namespace) -> int:
    import os

    from expeditor.dispatch import dispatch_command
    from expeditor.recipes.commands import parse_inputs
    from expeditor.runs import CallerContext
    from expeditor.runs.worktrees import Isolation

    settings = _settings(args)
    configure_logging(settings)
    launcher = dispatch_launcher(settings)
    return dispatch_command(
        settings,
        args.campaign,
        args.name,
        args.recipe,
        parse_inputs(args.input),
        caller=CallerContext.from_env(os.environ),
        force=args.force,
        cwd=Path(args.cwd) if args.cwd else None,
        stale_threshold=args.stale_threshold,
        as_json=args.json,
        out=sys.stdout,
        err=sys.stderr,
        launcher=launcher,
        isolation=Isolation(args.isolation) if args.isolation else None,
    )


def _report(args: argparse.Namespace) -> int:
    from expeditor.reports import report_command

    chosen = args.format or ("table" if sys.stdout.isatty() else "markdown")
    fmt = "md" if chosen in ("markdown", "md") else chosen
    return report_command(_settings(args), args.campaign, job_name=args.job, fmt=fmt, out=sys.stdout)


def _db_migrate(args: argparse.Namespace) -> int:
    from expeditor.state.db_commands import migrate_command

    settings = _settings(args)
    migrated = migrate_command(settings, sys.stdout)
    return migrated if migrated or settings.store_url is None else migrate_queue_too(settings, sys.stdout)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="expeditor", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--home", help="expeditor's home (default: a per-user state directory for this project)")
    commands = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND")

    run_skill = commands.add_parser(
        "run-skill",
        help="run one headless session and print its result",
        description="Run one headless session for a skill command, supervised like run_skill (stale, idle, "
        "timeout, process tree), and print how it ended, why, and what it cost. Exit 0 on success, 1 otherwise.",
    )
    run_skill.add_argument("command", help="the skill command or prompt, e.g. '/make-plan 42'")
    run_skill.add_argument("--cwd", default=".", help="working directory of the session (default: .)")
    run_skill.add_argument("--model", help="sonnet, opus, haiku or a full model id")
    run_skill.add_argument(
        "--stale-threshold", type=_positive_seconds, help="seconds of silence before the session is stale"
    )
    run_skill.add_argument("--timeout", type=_positive_seconds, help="wall-clock limit in seconds")
    run_skill.add_argument("--resume", metavar="SESSION_ID", help="resume this session instead of starting one")
    run_skill.add_argument("--add-dir", action="append", default=[], help="extra directory the session may use")
    run_skill.add_argument("--json", action="store_true", help="print the RunResult as JSON")
    run_skill.set_defaults(handler=_run_skill)

    serve = commands.add_parser(
        "serve",
        help="run the MCP server (stdio by default)",
        description="Run the MCP server: run_skill, dispatch, get_dispatch, list_dispatches, list_sessions, "
        "cancel_session, list_recipes, validate_recipe and token_report. Over stdio (the "
        "default) it is started by Claude Code: claude mcp add --scope user expeditor -- /abs/path/to/expeditor "
        "serve. Over HTTP it prints "
        "its URL (http://HOST:PORT/mcp) on stderr once it listens. SIGINT or SIGTERM stops it (exit 0). Logs go to "
        "stderr and <home>/logs, never stdout.",
    )
    serve.add_argument("--transport", choices=("stdio", "http"), default="stdio", help="stdio (default) or http")
    serve.add_argument("--host", help="HTTP bind address (default: the http_host setting, 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="HTTP port (default: the http_port setting, 8765)")
    serve.add_argument(
        "--insecure-no-token",
        action="store_true",
        help="serve HTTP on an address other than loopback without http_token, for a network you trust "
        "(refused otherwise; a warning is logged at every start)",
    )
    serve.set_defaults(handler=_serve)

    dispatch = commands.add_parser(
        "dispatch",
        help="run a campaign's named job once (a recorded success returns at once)",
        description="Run one named job of a campaign with a recipe: an agent orchestrator, or the pipeline runner "
        "for orchestrator: pipeline. The job is recorded; a job that already succeeded returns at once, one whose "
        "process died is resumed.",
    )
    dispatch.add_argument("campaign")
    dispatch.add_argument("name", help="the job's name within the campaign")
    dispatch.add_argument("--recipe", required=True, help="recipe name (expeditor recipe list)")
    dispatch.add_argument("--input", action="append", default=[], metavar="KEY=VALUE", help="a recipe input")
    dispatch.add_argument("--cwd", help="project directory the job works in (default: the first allowed root)")
    dispatch.add_argument("--force", action="store_true", help="rerun a job that already succeeded")
    dispatch.add_argument(
        "--stale-threshold", type=_positive_seconds, help="seconds of silence before the orchestrator is stale"
    )
    dispatch.add_argument("--json", action="store_true", help="print the outcome as JSON")
    dispatch.add_argument("--isolation", choices=("none", "worktree"), help="worktree: a git worktree of its own")
    dispatch.set_defaults(handler=_dispatch)
    add_worktree_commands(commands)

    status = commands.add_parser(
        "status",
        help="live sessions (and a campaign's jobs): what each waits on, why alive",
        description="Show every live managed session (from the live-session registry): what it waits on and why it "
        "counts as alive; with --campaign also the campaign's jobs and each pipeline job's steps. Works while a "
        "server or pipeline runs in another process. Exit 1 when nothing has run for this project (no home) or "
        "the campaign is unknown.",
    )
    status.add_argument("--campaign", help="also show this campaign's dispatch records")
    status_output = status.add_mutually_exclusive_group()
    status_output.add_argument(
        "--watch", action="store_true", help="refresh until interrupted (plain snapshots when not on a terminal)"
    )
    status_output.add_argument("--json", action="store_true", help="print sessions and dispatch records as JSON")
    status.add_argument(
        "--interval", type=_positive_seconds, default=1.0, help="seconds between refreshes with --watch"
    )
    status.set_defaults(handler=_status)

    add_cancel_command(commands, lambda args: functools.partial(_settings, args))

    marker = commands.add_parser(
        "marker",
        help="hold an execution marker for a session from another tool",
        description="Execution markers tell expeditor that a silent session is blocked on work, not stuck. "
        "Other tools hold one with `marker hold`; the file format is in the README (Execution marker format).",
    )
    marker_commands = marker.add_subparsers(dest="marker_command", required=True, metavar="ACTION")
    hold = marker_commands.add_parser(
        "hold",
        help="vouch for a session while a command runs",
        description="Hold a marker for session ID while COMMAND runs as this process's child, then remove it: "
        "while the command runs, the session's silence is not taken for a stall (up to --expires-in, or "
        "max_suppression_seconds without it, and never past the longest call expeditor allows). SIGINT, SIGTERM "
        "and SIGHUP are forwarded to the command. Exits with the command's exit status; 2 on bad input.",
    )
    hold.add_argument("--session", required=True, metavar="ID", help="the id of the session to vouch for")
    hold.add_argument("--label", default="hold", help="what the session waits on, shown by status (default: hold)")
    hold.add_argument(
        "--expires-in",
        type=_positive_seconds,
        metavar="S",
        help="trust the marker for at most S seconds (default: no expiry, bounded by max_suppression_seconds)",
    )
    hold.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND...", help="the command to run")
    hold.set_defaults(handler=_marker_hold)

    demo = commands.add_parser(
        "demo",
        help="see supervision work in seconds, on the bundled fake agent",
        description="Dispatch the bundled demo campaign on the fake agent in a temporary home (no API key, no "
        "network) and check four outcomes: a step blocked on a long tool call survives, a stuck step is killed with "
        "its tree, a repeat dispatch returns at once, and the token usage report. Exit 0 only if all four happened.",
    )
    demo.add_argument("--markdown", metavar="FILE", help="also write the usage report as markdown to FILE")
    demo.set_defaults(handler=_demo)

    add_worker_command(commands, lambda args: functools.partial(_settings, args))
    from expeditor.runs.campaign_command import add_campaign_actions  # as lazily as every handler's module

    campaign = commands.add_parser(
        "campaign", help="a campaign's budget", description="Manage a campaign: set, show or clear its budget."
    )
    add_campaign_actions(campaign)

    report = commands.add_parser(
        "report",
        help="a campaign's token usage: per step, efficiency per line changed, per model",
        description="Print a campaign's token usage report from the campaign store: Token Usage Summary (one row "
        "per step), Token Efficiency (per line of code changed) and Model Usage Breakdown.",
    )
    report.add_argument("campaign", help="campaign id (a dispatch's campaign, or the one recipe run printed)")
    report.add_argument("--job", help="only this job of the campaign")
    report.add_argument(
        "--format",
        choices=("markdown", "json", "table", "md"),
        default=None,
        help="markdown (to paste into a pull request; md for short), json (as token_report's), or table (default: "
        "table on a terminal, markdown otherwise)",
    )
    report.set_defaults(handler=_report)

    db = commands.add_parser(
        "db", help="the shared PostgreSQL campaign store", description="Manage the shared PostgreSQL campaign store."
    )
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser(
        "migrate",
        help="apply the schema migrations the store lacks, printing its version before and after",
        description="Migrate the PostgreSQL campaign store that store_url (EXPEDITOR_STORE_URL) names, once for "
        "every host sharing it: hosts refuse a schema older or newer than the one they know.",
    ).set_defaults(handler=_db_migrate)

    add_recipe_commands(commands, _settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ExpeditorError as exc:
        sys.stderr.write(f"expeditor: {exc}\n")
        # 2 says "fix the command line"; a name that matches nothing or a broken file is 1, as a failure is.
        return EXIT_BAD_INPUT if isinstance(exc, InvalidInput) and not isinstance(exc, Unusable) else EXIT_FAILED
    except ValidationError as exc:
        from expeditor.server.boundary import argument_problems  # the MCP tools' wording, loaded only when needed

        sys.stderr.write(f"expeditor: invalid input: {argument_problems(exc)}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("expeditor: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
