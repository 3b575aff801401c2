"""What a caller asks for (RunRequest) and what it gets back (RunResult)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from expeditor.config import validate_model
from expeditor.errors import InvalidInput
from expeditor.executor.structured_output import checked_output_schema
from expeditor.ids import validate_identifier
from expeditor.times import Timestamp
from expeditor.usage.models import SessionUsage

__all__ = [
    "DecidedBy",
    "KilledProcess",
    "RunRequest",
    "RunResult",
    "SessionKind",
    "Signal",
    "Suppression",
    "Termination",
    "usable_path",
]


class Termination(StrEnum):
    """How a run ended."""

    COMPLETED = "completed"
    STALE = "stale"
    IDLE_STALL = "idle_stall"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    CRASHED = "crashed"
    LAUNCH_FAILED = "launch_failed"


class DecidedBy(StrEnum):
    """Which event ended the race that supervises a run."""

    EXIT = "exit"
    RESULT = "result"
    TRANSCRIPT = "transcript"
    STDOUT = "stdout"
    TIMEOUT = "timeout"
    CANCEL = "cancel"
    SIGNAL = "signal"


class Signal(StrEnum):
    """A liveness signal of a running session."""

    STDOUT = "stdout"
    STDERR = "stderr"
    TRANSCRIPT = "transcript"
    CHILDREN = "children"


class SessionKind(StrEnum):
    """What a managed session is, which decides the tools it may call."""

    SKILL = "skill"
    ORCHESTRATOR = "orchestrator"
    PIPELINE = "pipeline"
    COMMAND = "command"
    """A recipe's ``run`` step: a plain command, no agent."""


class KilledProcess(BaseModel):
    """A process that was still alive when its run ended, and was killed."""

    model_config = ConfigDict(frozen=True)

    pid: int = Field(description="Its process id.")
    cmdline: list[str] = Field(description="Its command line, as the process table showed it.")
    signal: str = Field(description="The last signal it needed: SIGTERM or SIGKILL.")
    escaped: bool = Field(default=False, description="It had left the session's process group.")


class Suppression(BaseModel):
    """A marker that kept a silent session alive, and for how long."""

    model_config = ConfigDict(frozen=True)

    marker: str = Field(description="The execution marker's file name.")
    seconds: float = Field(description="Silence it vouched for, seconds.")


class RunRequest(BaseModel):
    """One headless session to run."""

    model_config = ConfigDict(frozen=True)

    prompt: str = Field(min_length=1, description="The skill command or prompt, e.g. '/make-plan 42'.")
    cwd: Path = Field(description="Working directory of the session.")
    kind: SessionKind = SessionKind.SKILL
    model: str | None = None
    session_id: str | None = Field(default=None, description="Chosen before launch when None.")
    resume_session_id: str | None = Field(default=None, description="Resume this session instead.")
    stale_threshold: float | None = Field(default=None, gt=0)
    idle_timeout: float | None = Field(default=None, gt=0)
    timeout: float | None = Field(default=None, gt=0)
    add_dirs: tuple[Path, ...] = ()
    mcp_config: dict[str, Any] | None = Field(default=None, description="Written to a file for --mcp-config.")
    allowed_tools: tuple[str, ...] = ()
    permission_mode: str | None = None
    output_schema: dict[str, Any] | None = Field(
        default=None,
        description="A JSON Schema (of an object) the session's final answer must match: passed as --json-schema; "
        "the answer comes back as the result's structured_output.",
    )
    extra_args: tuple[str, ...] = ()
    max_budget_usd: float | None = Field(
        default=None, gt=0, description="Claude Code's --max-budget-usd: it stops the session at this cost."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the child.")
    argv: tuple[str, ...] | None = Field(
        default=None,
        min_length=1,
        description="Run this command instead of the agent (a recipe's run step, or a pipeline runner); "
        "it has no transcript, so stdout silence and markers judge it.",
    )
    argv_reports_result: bool = Field(
        default=False,
        description="The argv command ends with a stream-json result event (a pipeline runner); otherwise "
        "its exit code is its outcome and its stdout its result text.",
    )

    # ValueError (not our InvalidInput) so pydantic reports the field that was wrong.
    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        try:
            return None if value is None else validate_model(value)
        except InvalidInput as exc:
            raise ValueError(str(exc)) from None

    @field_validator("output_schema")
    @classmethod
    def _output_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else checked_output_schema(value)

    @field_validator("session_id", "resume_session_id")
    @classmethod
    def _safe_id(cls, value: str | None) -> str | None:
        try:
            return None if value is None else validate_identifier(value)
        except InvalidInput as exc:
            raise ValueError(str(exc)) from None

    @field_validator("cwd")
    @classmethod
    def _usable_path(cls, value: Path) -> Path:
        return usable_path(value, what="cwd")

    @field_validator("add_dirs")
    @classmethod
    def _usable_paths(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        return tuple(usable_path(path, what="add_dirs entry") for path in value)


def usable_path(path: Path, *, what: str) -> Path:
    """``path`` unless the operating system could never open it (a NUL byte); ValueError says which field."""
    if "\0" in str(path):
        raise ValueError(f"{what} {str(path)!r} contains a NUL byte: expected a path the file system can hold")
    return path


class RunResult(BaseModel):
    """How one managed session ended, with the evidence for the verdict."""

    success: bool = Field(description="The session completed and did not report an error.")
    termination: Termination = Field(
        description="How it ended: completed, stale (transcript silent), idle_stall (stdout silent), timeout, "
        "cancelled, crashed or launch_failed."
    )
    exit_code: int | None = Field(description="The agent process's exit code; None when it never started.")
    session_id: str = Field(description="The session's id: pass it as resume_session_id to continue the session.")
    caller_session_id: str | None = Field(default=None, description="The session that asked for this run, if known.")
    result_text: str = Field(default="", description="The session's final text (its result).")
    structured_output: dict[str, Any] | None = Field(
        default=None,
        description="The object the session answered with, when it ran with an output_schema and answered through it.",
    )
    is_error: bool = Field(default=False, description="The session reported an error result.")
    permission_denials: list[str] = Field(
        default_factory=list,
        description="Tools the session tried to use and was refused (headless: no prompt).",
    )
    usage: SessionUsage = Field(default_factory=SessionUsage, description="The session's token usage.")
    duration_s: float = Field(description="Wall time from spawn to the end of its last process, seconds.")
    started_at: Timestamp | None = Field(default=None, description="When the session was spawned.")
    ended_at: Timestamp | None = Field(default=None, description="When its last process was gone.")
    # A plain string in the schema: Claude Code's validator warns about the "path" format.
    transcript_path: Annotated[Path, WithJsonSchema({"type": "string"})] | None = Field(
        default=None, description="The session's transcript file (Claude Code's JSONL), when it has one."
    )
    stderr_tail: str = Field(default="", description="The last lines the session wrote to stderr.")
    decided_by: DecidedBy = Field(
        description="The event that ended the run: exit, result, transcript, stdout, timeout, cancel or signal."
    )
    reason: str = Field(description="One sentence a person can act on.")
    last_moved: dict[Signal, Timestamp] = Field(
        default_factory=dict, description="When each liveness signal (stdout, stderr, transcript, children) last moved."
    )
    suppressed_by: list[Suppression] = Field(
        default_factory=list, description="The execution markers that kept it alive while it was silent."
    )
    suppressed_s: float = Field(default=0.0, description="Silence vouched for by execution markers, seconds.")
    killed: list[KilledProcess] = Field(
        default_factory=list, description="Every process still alive when the run ended, and killed."
    )
    containment: Literal["cgroup", "tree"] = Field(
        default="tree",
        description="What held the session's processes together for the kill: its own cgroup (nothing escapes "
        "it), or its process tree, group and environment tag (a clean-environment daemon can escape those).",
    )
