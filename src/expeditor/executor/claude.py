"""The Claude Code executor: builds the ``claude -p`` command and environment, runs it managed.

The command is configuration, not a code path: ``claude_command`` may be the real CLI or the
fake agent, and the same flags are appended either way.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from expeditor.bundled import bundled_plugin_dir
from expeditor.claude_paths import transcript_path
from expeditor.config import RunPolicy, Settings
from expeditor.errors import InvalidInput
from expeditor.executor.containment import SessionContainment
from expeditor.executor.launch_files import LaunchFile
from expeditor.executor.models import RunRequest, RunResult, Suppression, Termination, usable_path
from expeditor.executor.registry import SessionRegistry
from expeditor.executor.runner import LaunchSpec, ManagedOutcome, RunControl, run_managed
from expeditor.executor.session import Watcher
from expeditor.homes import worktrees_root
from expeditor.ids import new_session_id, validate_identifier
from expeditor.usage.transcript import usage_from_transcript

__all__ = [
    "BUDGET_STOP_SUBTYPE",
    "SECRET_SETTINGS",
    "ClaudeCodeExecutor",
    "WatcherFactory",
    "build_command",
    "checked_directory",
    "child_environment",
    "to_run_result",
]

logger = logging.getLogger(__name__)

WatcherFactory = Callable[[LaunchSpec, RunPolicy], Sequence[Watcher]]

# An argument longer than this cannot be passed to exec on Linux (MAX_ARG_STRLEN).
_MAX_PROMPT_BYTES = 128 * 1024 - 1
SECRET_SETTINGS = frozenset({"http_token", "store_url"})
"""Settings whose values are (or may hold) credentials: never passed to a session, in its environment or its argv."""
# The parent's session id would be mistaken for the child's own; a secret is not the child's to have (libpq's
# PGPASSWORD included: a session's nested server reaches the store through a password file, PGPASSFILE).
_STRIPPED_FROM_CHILD = frozenset(
    {"CLAUDE_CODE_SESSION_ID", "PGPASSWORD", *(f"EXPEDITOR_{name.upper()}" for name in SECRET_SETTINGS)}
)
_DEFAULT_CONFIG_DIR = Path.home() / ".claude"
BUDGET_STOP_SUBTYPE = "error_max_budget_usd"
"""The result event's subtype when Claude Code stopped a session at --max-budget-usd (docs/claude-code-cli-notes.md)."""


def build_command(settings: Settings, request: RunRequest, session_id: str, *, mcp_config: Path | None) -> list[str]:
    """The argv of one session: the configured command, then our flags, prompt right after ``-p``.

    With ``settings.bundled_skills`` the session also gets expeditor's bundled plugin, whose skills
    it reaches as ``/expeditor:<skill>`` (docs/claude-code-cli-notes.md, "Bundled skills").
    """
    argv = [*settings.claude_argv, "-p", request.prompt, "--output-format", "stream-json", "--verbose"]
    if request.resume_session_id is not None:
        # The CLI refuses --session-id together with --resume; the resumed id stays the same.
        argv += ["--resume", request.resume_session_id]
    else:
        argv += ["--session-id", session_id]
    model = request.model or settings.default_model
    if model is not None:
        argv += ["--model", model]
    argv += ["--permission-mode", request.permission_mode or settings.permission_mode]
    if settings.bundled_skills:
        argv += ["--plugin-dir", str(bundled_plugin_dir())]
    for directory in request.add_dirs:
        argv += ["--add-dir", str(directory)]
    if mcp_config is not None:
        argv += ["--mcp-config", str(mcp_config)]
    if request.output_schema is not None:
        argv += ["--json-schema", json.dumps(request.output_schema, separators=(",", ":"))]
    if request.max_budget_usd is not None:
        argv += ["--max-budget-usd", f"{request.max_budget_usd:.10g}"]
    argv += list(request.extra_args)
    if request.allowed_tools:
        # Variadic: keep it last so it cannot swallow anything that follows.
        argv += ["--allowedTools", *request.allowed_tools]
    return argv


def child_environment(
    base_env: Mapping[str, str],
    settings: Settings,
    request: RunRequest,
    *,
    session_id: str,
    marker_dir: Path | None,
    caller_session_id: str | None,
) -> dict[str, str]:
    """The server's own environment (API key, Claude settings) plus who the child is and who waits on it."""
    env = {key: value for key, value in base_env.items() if key not in _STRIPPED_FROM_CHILD}
    env.update(request.env)
    env["EXPEDITOR_SESSION_ID"] = session_id
    env["EXPEDITOR_SESSION_KIND"] = request.kind.value
    env["EXPEDITOR_HOME"] = str(settings.home)
    if marker_dir is not None:
        env["EXPEDITOR_MARKER_DIR"] = str(marker_dir)
    if caller_session_id is not None:
        env["EXPEDITOR_PARENT_SESSION_ID"] = caller_session_id
    else:
        env.pop("EXPEDITOR_PARENT_SESSION_ID", None)
    if settings.claude_config_dir != _DEFAULT_CONFIG_DIR:
        # Only when configured: CLAUDE_CONFIG_DIR also moves where the CLI reads its user config.
        env["CLAUDE_CONFIG_DIR"] = str(settings.claude_config_dir)
    return env


def checked_directory(settings: Settings, path: Path, *, what: str) -> Path:
    """``path`` resolved, if it is an existing directory inside the allowed roots; else InvalidInput.

    The one check for every directory a session is given (its ``cwd``, each ``add_dirs`` entry);
    symlinks are resolved first, so a link inside a root cannot lead outside it.
    """
    try:
        resolved = usable_path(path, what=what).expanduser().resolve()
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if not resolved.is_dir():
        raise InvalidInput(f"{what} {path} does not exist or is not a directory: expected an existing directory")
    # The jobs' worktrees are expeditor's own directory: allowed without being listed.
    roots = (*settings.allowed_roots, worktrees_root(settings.home).resolve())
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        roots = ", ".join(str(root) for root in settings.allowed_roots)
        raise InvalidInput(
            f"{what} {resolved} is outside the allowed roots ({roots}): "
            "use a directory inside one of them or add it to EXPEDITOR_ALLOWED_ROOTS"
        )
    return resolved


class ClaudeCodeExecutor:
    """Runs one headless Claude Code session per call, supervised by the managed runner."""

    def __init__(
        self,
        settings: Settings,
        *,
        base_env: Mapping[str, str] | None = None,
        watcher_factory: WatcherFactory,
        registry: SessionRegistry | None = None,
        containment: SessionContainment | None = None,
    ) -> None:
        self.settings = settings
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.registry = registry if registry is not None else SessionRegistry(settings.sessions_dir)
        self.watcher_factory = watcher_factory
        self.containment = containment

    def checked_cwd(self, cwd: Path) -> Path:
        """``cwd`` resolved, if it is an existing directory inside the allowed roots; else InvalidInput."""
        return checked_directory(self.settings, cwd, what="cwd")

    def prepare(
        self, request: RunRequest, *, marker_dir: Path | None, caller_session_id: str | None
    ) -> tuple[LaunchSpec, RunPolicy]:
        """Validate the request and build the launch without starting anything."""
        # The prompt is one argument of the agent's command line; a command's own argv is checked instead.
        for argument in request.argv if request.argv is not None else (request.prompt,):
            if len(argument.encode()) > _MAX_PROMPT_BYTES:
                what = "an argument of the command" if request.argv is not None else "prompt"
                raise InvalidInput(
                    f"{what} is {len(argument.encode())} bytes: expected at most {_MAX_PROMPT_BYTES} (MAX_ARG_STRLEN)"
                )
        if request.argv is None and request.prompt.startswith("-"):
            raise InvalidInput(f"prompt {request.prompt[:40]!r} starts with '-': expected a skill command or text")
        if caller_session_id is not None:
            validate_identifier(caller_session_id, what="caller session id")
        cwd = self.checked_cwd(request.cwd)
        # The session reads and edits its added directories as freely as its cwd: the same roots bound them.
        add_dirs = tuple(checked_directory(self.settings, d, what="add_dirs entry") for d in request.add_dirs)
        request = request.model_copy(update={"add_dirs": add_dirs})
        session_id = request.resume_session_id or request.session_id or new_session_id()
        try:
            uuid.UUID(session_id)
        except ValueError:
            raise InvalidInput(
                f"session id {session_id!r} is not a UUID: Claude Code accepts only UUIDs as session ids"
            ) from None
        files: tuple[LaunchFile, ...] = ()
        if request.argv is None and request.mcp_config is not None:
            # By path, not inline: a command line is readable by every local user, and the config may
            # carry a credential. Unique per launch: a resumed session keeps its id.
            path = self.settings.home / "launch" / f"{session_id}-{uuid.uuid4().hex[:8]}.mcp.json"
            files = (LaunchFile(path, json.dumps(request.mcp_config, separators=(",", ":"))),)
        argv = (
            list(request.argv)
            if request.argv is not None
            else build_command(self.settings, request, session_id, mcp_config=files[0].path if files else None)
        )
        env = child_environment(
            self.base_env,
            self.settings,
            request,
            session_id=session_id,
            marker_dir=marker_dir,
            caller_session_id=caller_session_id,
        )
        spec = LaunchSpec(
            argv=argv,
            env=env,
            cwd=cwd,
            session_id=session_id,
            kind=request.kind,
            transcript_path=None
            if request.argv is not None
            else transcript_path(self.settings.claude_config_dir, cwd, session_id),
            caller_session_id=caller_session_id,
            marker_dir=marker_dir,
            reports_result=request.argv is None or request.argv_reports_result,
            files=files,
        )
        policy = self.settings.run_policy(
            timeout=request.timeout,
            stale_threshold=request.stale_threshold,
            idle_timeout=request.idle_timeout,
        )
        return spec, policy

    async def run(
        self,
        request: RunRequest,
        *,
        marker_dir: Path | None,
        caller_session_id: str | None,
        control: RunControl | None = None,
    ) -> RunResult:
        """Run the session to its end. Cancelling this call kills the session's tree first."""
        spec, policy = self.prepare(request, marker_dir=marker_dir, caller_session_id=caller_session_id)
        return await self.run_prepared(spec, policy, control=control)

    async def run_prepared(
        self,
        spec: LaunchSpec,
        policy: RunPolicy,
        *,
        control: RunControl | None = None,
        followers: Sequence[Watcher] = (),
    ) -> RunResult:
        """Run a launch ``prepare`` built (and checked) to its end; cancelling this call kills its tree first.

        ``followers``: watchers of this run alone (its supervisor's progress), besides the executor's.
        """
        watchers = [*self.watcher_factory(spec, policy), *followers]
        control = control or RunControl()
        logger.info(
            "session=%s starting kind=%s caller=%s cwd=%s",
            spec.session_id,
            spec.kind,
            spec.caller_session_id,
            spec.cwd,
        )
        try:
            # Set here too: a launch that failed returns before the runner touches the control.
            control.outcome = await run_managed(
                spec, policy, watchers=watchers, registry=self.registry, control=control, containment=self.containment
            )
        finally:
            # Also when cancelled: the caller's RunControl keeps the result of a run it never received.
            if control.outcome is not None:
                control.result = to_run_result(spec, control.outcome)
                logger.info(
                    "session=%s ended termination=%s decided_by=%s: %s",
                    spec.session_id,
                    control.result.termination.value,
                    control.result.decided_by.value,
                    control.result.reason,
                )
        assert control.result is not None
        return control.result


def to_run_result(spec: LaunchSpec, outcome: ManagedOutcome) -> RunResult:
    """Turn what the runner observed into the caller's result, taking usage from the right place."""
    result = outcome.stream.result
    if result is not None:
        usage = result.usage
    elif spec.transcript_path is not None:
        usage = usage_from_transcript(spec.transcript_path, outcome.transcript_offset)
    else:
        usage = usage_from_transcript(Path(os.devnull))
    termination = outcome.verdict.termination
    reason = outcome.verdict.reason
    if termination is Termination.CANCELLED and result is not None and not result.is_error:
        # Its work was done and reported; only its exit was cut short. Calling it cancelled would
        # make a resume pay for the same work again.
        termination = Termination.COMPLETED
        reason = f"the session reported its result; then {reason[:1].lower()}{reason[1:]}"
    if not spec.reports_result:
        is_error = outcome.exit_code != 0
        if termination is Termination.COMPLETED and is_error:
            reason = f"the command exited with code {outcome.exit_code}; see stderr_tail"
        result_text = outcome.stdout_tail
    else:
        is_error = result is not None and result.is_error
        result_text = result.text if result is not None else ""
    if termination is Termination.COMPLETED and is_error and result is not None:
        first_line = ([*result.errors, *result.text.strip().splitlines()] or [result.subtype or "no message"])[0]
        reason = f"the session completed with an error result: {first_line[:200]}"
        if result.subtype == BUDGET_STOP_SUBTYPE:
            reason = f"Claude Code stopped the session at its budget (--max-budget-usd): {first_line[:200]}"
    transcript = spec.transcript_path if spec.transcript_path is not None and spec.transcript_path.exists() else None
    return RunResult(
        success=termination is Termination.COMPLETED and not is_error,
        termination=termination,
        exit_code=outcome.exit_code,
        session_id=spec.session_id,
        caller_session_id=spec.caller_session_id,
        result_text=result_text,
        structured_output=result.structured_output if result is not None and spec.reports_result else None,
        is_error=is_error,
        permission_denials=list(result.permission_denials) if result is not None else [],
        usage=usage,
        duration_s=round(outcome.duration_s, 3),
        started_at=outcome.started_at,
        ended_at=outcome.ended_at,
        transcript_path=transcript,
        stderr_tail=outcome.stderr_tail,
        decided_by=outcome.verdict.decided_by,
        reason=reason,
        last_moved=outcome.last_moved,
        suppressed_by=[Suppression(marker=name, seconds=round(s, 3)) for name, s in outcome.suppressed_by.items()],
        suppressed_s=round(sum(outcome.suppressed_by.values()), 3),
        killed=outcome.killed,
        containment=outcome.containment,
    )
