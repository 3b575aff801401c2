"""The fake agent's scenario: what it prints, writes, spawns and calls, step by step, validated by pydantic.

A scenario is YAML or JSON. Each step is a mapping with exactly one key naming its kind, so a scenario
reads like a script::

    model: claude-sonnet-4-5
    ignore_sigterm: false
    steps:
      - assistant: "Looking."                       # one text block, default usage
      - assistant:
          content: [{text: "Running it."}, {tool_use: {name: Bash, input: {command: ls}}}]
          usage: {input: 11, output: 7, cache_read: 1000, cache_write: 200}
      - tool_result: "README.md"                    # answers the last tool_use
      - sleep: 0.5
      - result: {}                                  # totals computed from the replies above

Extra keys are refused everywhere, so a typo fails loudly (exit 2) instead of silently doing nothing.
A new step kind is one model and one member of ``Step`` here, and one ``case`` in ``steps.py``
(pyright's exhaustiveness check points at the missing case).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from expeditor.errors import ScenarioError
from expeditor.testing.conversation import Tokens
from expeditor.testing.marker_step import MarkerStep

__all__ = [
    "STEP_KINDS",
    "AssistantReply",
    "AssistantStep",
    "BurnCpuStep",
    "CallToolStep",
    "ExitStep",
    "HangStep",
    "RawStdoutStep",
    "ResultStep",
    "Scenario",
    "SleepStep",
    "SpawnStep",
    "StderrStep",
    "StdoutOnlyStep",
    "Step",
    "TickStep",
    "ToolResultStep",
    "TranscriptOnlyStep",
    "Usage",
    "parse_scenario",
]


class _Strict(BaseModel):
    """Every scenario model: unknown keys are errors, values are immutable once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Usage(_Strict):
    """Token figures of one assistant message as the API would report them at the end of its stream."""

    input: int = Field(default=Tokens.input, ge=0, description="input_tokens")
    output: int = Field(default=Tokens.output, ge=0, description="output_tokens (stdout shows 1: the opening count)")
    cache_read: int = Field(default=Tokens.cache_read, ge=0, description="cache_read_input_tokens")
    cache_write: int = Field(default=Tokens.cache_write, ge=0, description="cache_creation_input_tokens")

    def tokens(self) -> Tokens:
        return Tokens(self.input, self.output, self.cache_read, self.cache_write)


class ToolUse(_Strict):
    """A tool_use content block; ``id`` is made up (``toolu_…``) when omitted."""

    name: str
    input: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None


class TextBlock(_Strict):
    text: str


class ToolUseBlock(_Strict):
    tool_use: ToolUse


def _one_key(value: Any) -> str | None:
    """The key of a one-key mapping: the tag that picks the union member (``{sleep: 1}`` → ``sleep``)."""
    if isinstance(value, dict) and len(value) == 1:  # pyright: ignore[reportUnknownArgumentType]
        return str(next(iter(value)))  # pyright: ignore[reportUnknownArgumentType]
    return None


Block = Annotated[
    Annotated[TextBlock, Tag("text")] | Annotated[ToolUseBlock, Tag("tool_use")],
    Discriminator(
        _one_key,
        custom_error_type="content_block",
        custom_error_message="a content block is {text: ...} or {tool_use: {name, input, id}}",
    ),
]


class AssistantReply(_Strict):
    """One assistant message: stdout gets one event per block, the transcript one line per block."""

    content: list[Block] = Field(min_length=1)
    usage: Usage = Usage()
    id: str | None = Field(default=None, description="message id; made up (msg_…) when omitted")
    model: str | None = Field(default=None, description="this message's model; the scenario's model when omitted")
    stop_reason: str | None = Field(default=None, description="tool_use if a block is one, else end_turn")

    @field_validator("content", mode="before")
    @classmethod
    def _text_shorthand(cls, value: Any) -> Any:
        return [{"text": value}] if isinstance(value, str) else value


class ToolResult(_Strict):
    """A tool_result block sent back as a ``user`` message; answers the last tool_use when no id is given."""

    content: str | list[dict[str, Any]] = ""
    tool_use_id: str | None = None
    is_error: bool = False


class RawText(_Strict):
    """Text written to stdout verbatim; ``repeat`` builds big lines without a big scenario.

    Encoded as UTF-8 with ``surrogateescape``: a lone ``\\udcff`` in the text is written as the
    single byte 0xff, so a scenario can print bytes that are not UTF-8.
    """

    text: str
    repeat: int = Field(default=1, ge=1)
    newline: bool = True


class Tick(_Strict):
    """One small line every ``interval`` seconds for ``duration`` seconds, on one signal or both."""

    interval: float = Field(gt=0)
    duration: float = Field(ge=0)
    to: Literal["transcript", "stdout", "both"] = "both"


class Spawn(_Strict):
    """Child processes that inherit the agent's environment (so ``EXPEDITOR_SESSION_ID`` too)."""

    sleep: float = Field(default=60.0, ge=0, description="lifetime of each child, seconds")
    count: int = Field(default=1, ge=1, le=64)
    setsid: bool = Field(default=False, description="the child calls setsid(): it leaves the agent's process group")
    double_fork: bool = Field(default=False, description="a daemon whose middle process exits: out of group and tree")
    clean_env: bool = Field(
        default=False,
        description="the daemon then execs itself with a one-variable environment: no EXPEDITOR_SESSION_ID tag either",
    )
    ignore_sigterm: bool = False
    burn_cpu: bool = Field(default=False, description="busy-loop for the lifetime instead of sleeping")
    wait: bool = Field(default=False, description="the agent waits for its children before the next step")
    close_stdio: bool = Field(default=False, description="children get /dev/null instead of the agent's stdout/stderr")


class ToolCall(_Strict):
    """An MCP tool call on a server named in ``--mcp-config``, through the real MCP client."""

    server: str
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    usage: Usage = Field(default=Usage(), description="usage of the tool_use message")
    timeout: float | None = Field(default=None, gt=0, description="seconds to wait for the answer")


class ResultSpec(_Strict):
    """The final ``result`` event; every field left out is computed from what was sent."""

    text: str | None = Field(default=None, description="default: the last assistant text")
    is_error: bool = False
    subtype: Literal["success", "error_during_execution", "error_max_turns"] | None = None
    usage: Usage | None = Field(default=None, description="default: the sum over messages, each counted once")
    num_turns: int | None = Field(default=None, ge=0)
    cost_usd: float | None = Field(default=None, ge=0)
    structured_output: dict[str, Any] | None = Field(
        default=None,
        description="the object answered through --json-schema, as the real CLI reports it; text defaults to its JSON",
    )


def _none_to_empty(value: Any) -> Any:
    return {} if value is None else value


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


class AssistantStep(_Strict):
    assistant: AssistantReply

    @field_validator("assistant", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"content": value} if isinstance(value, str | list) else value


class ToolResultStep(_Strict):
    tool_result: ToolResult

    @field_validator("tool_result", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"content": value} if isinstance(value, str) else _none_to_empty(value)


class SleepStep(_Strict):
    sleep: float = Field(ge=0)


class TranscriptOnlyStep(_Strict):
    transcript_only: list[str | dict[str, Any]]

    _listify = field_validator("transcript_only", mode="before")(_as_list)


class StdoutOnlyStep(_Strict):
    stdout_only: list[str | dict[str, Any]]

    _listify = field_validator("stdout_only", mode="before")(_as_list)


class TickStep(_Strict):
    tick: Tick


class StderrStep(_Strict):
    stderr: str


class RawStdoutStep(_Strict):
    raw_stdout: RawText

    @field_validator("raw_stdout", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"text": value} if isinstance(value, str) else value


class SpawnStep(_Strict):
    spawn: Spawn

    _empty = field_validator("spawn", mode="before")(_none_to_empty)


class BurnCpuStep(_Strict):
    burn_cpu: float = Field(ge=0)


class CallToolStep(_Strict):
    call_tool: ToolCall


class ResultStep(_Strict):
    result: ResultSpec

    @field_validator("result", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"text": value} if isinstance(value, str) else _none_to_empty(value)


class FileWrite(_Strict):
    """A file the agent writes, as an agent editing a project does (no output, no transcript line)."""

    path: str = Field(min_length=1, description="relative to the working directory")
    text: str

    @field_validator("path")
    @classmethod
    def _inside(cls, value: str) -> str:
        if Path(value).is_absolute() or ".." in Path(value).parts:
            raise ValueError(f"path {value!r} must stay inside the working directory")
        return value


class WriteFileStep(_Strict):
    write_file: FileWrite


class ExitStep(_Strict):
    exit: int = Field(ge=0, le=255)


class HangStep(_Strict):
    hang: Literal[True] = True

    @field_validator("hang", mode="before")
    @classmethod
    def _bare(cls, value: Any) -> Any:
        return True if value is None or value == {} else value


Step = Annotated[
    Annotated[AssistantStep, Tag("assistant")]
    | Annotated[ToolResultStep, Tag("tool_result")]
    | Annotated[SleepStep, Tag("sleep")]
    | Annotated[TranscriptOnlyStep, Tag("transcript_only")]
    | Annotated[StdoutOnlyStep, Tag("stdout_only")]
    | Annotated[TickStep, Tag("tick")]
    | Annotated[StderrStep, Tag("stderr")]
    | Annotated[RawStdoutStep, Tag("raw_stdout")]
    | Annotated[SpawnStep, Tag("spawn")]
    | Annotated[BurnCpuStep, Tag("burn_cpu")]
    | Annotated[CallToolStep, Tag("call_tool")]
    | Annotated[ResultStep, Tag("result")]
    | Annotated[WriteFileStep, Tag("write_file")]
    | Annotated[ExitStep, Tag("exit")]
    | Annotated[HangStep, Tag("hang")]
    | Annotated[MarkerStep, Tag("marker")],
    Discriminator(_one_key),
]

STEP_KINDS: tuple[str, ...] = tuple(get_args(member)[1].tag for member in get_args(get_args(Step)[0]))
"""Every step kind, in the union's order (read from the ``Tag`` of each member)."""


class Scenario(_Strict):
    """A whole run: the steps in order, then exit with ``exit_code``. No ``result`` step, no result event."""

    steps: list[Step] = Field(default_factory=list)
    model: str | None = Field(default=None, description="default: --model, else claude-sonnet-4-5")
    ignore_sigterm: bool = Field(default=False, description="SIGTERM is noted on stderr and ignored; SIGKILL ends it")
    init: bool = Field(default=True, description="emit the system/init event first (stream-json)")
    exit_code: int = Field(default=0, ge=0, le=255, description="exit status after the last step")

    @field_validator("steps", mode="before")
    @classmethod
    def _name_bad_steps(cls, value: Any) -> Any:
        """Say which step is malformed and what a step looks like, before the union tries each member."""
        if not isinstance(value, list):
            return value
        bad = [
            f"step {index} has {list(step) if isinstance(step, dict) else type(step).__name__}"  # pyright: ignore
            for index, step in enumerate(value)  # pyright: ignore[reportUnknownVariableType]
            if _one_key(step) not in STEP_KINDS
        ]
        if bad:
            raise PydanticCustomError(
                "step_kind",
                "{bad}: each step is a mapping with exactly one key, one of {kinds}",
                {"bad": "; ".join(bad), "kinds": ", ".join(STEP_KINDS)},
            )
        return value


def parse_scenario(text: str, *, origin: str) -> Scenario:
    """Validate scenario text (JSON or YAML); ``origin`` names where it came from in the error."""
    import yaml  # here, not at import: a default run never parses a scenario

    data: Any
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ScenarioError(f"bad scenario ({origin}): not JSON or YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ScenarioError(f"bad scenario ({origin}): expected a mapping with 'steps', got {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(error['loc'])}: {error['msg']}" for error in exc.errors())
        raise ScenarioError(f"bad scenario ({origin}): {problems}") from exc


def _where(loc: tuple[int | str, ...]) -> str:
    """``steps[1].assistant.usage`` from pydantic's ``('steps', 1, 'assistant', 'assistant', 'usage')``."""
    text = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
        elif not (index + 1 < len(loc) and loc[index + 1] == part):  # a union tag repeats its field's name
            text += f".{part}" if text else part
    return text or "scenario"
