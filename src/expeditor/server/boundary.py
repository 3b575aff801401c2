"""The tools' error boundary: what the calling model reads when a tool cannot do what it was asked.

Every ``ExpeditorError`` becomes a ``ToolError`` whose text is the error's own sentence; the two
that mean "the record moved under this call" are said in words a model can act on. Arguments that
the tool's own schema refuses (checked by the SDK before the tool runs) or that a run's models
refuse (a RunRequest, a RunPolicy) are named argument by argument in one line, without pydantic's
wording or links. A failed system call becomes a ToolError that names what failed, instead of the
SDK's bare "Error executing tool". Anything else is a bug, left to the SDK, which logs it with its
traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Generator, Mapping
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import CallToolResult, InputRequiredResult
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from expeditor.errors import ClaimRefused, ExpeditorError, IllegalTransition, StaleAttempt, StoreUnavailable

__all__ = ["ExpeditorMCPServer", "argument_problems", "tool_errors"]

logger = logging.getLogger(__name__)

# The models a tool's arguments are checked by; a ValidationError of any other model is a bug, not bad input.
_ARGUMENT_MODELS = frozenset({"RunRequest", "RunPolicy"})


# Arguments renamed since the previous release, still accepted for one more: tool -> {old name: new name}.
_RENAMED_ARGUMENTS: Mapping[str, Mapping[str, str]] = {"token_report": {"campaign_id": "campaign"}}
_SHOWN_INPUT_LENGTH = 60


def _problem(error: ErrorDetails) -> str:
    """One refused argument as a clause: its name, what it accepts, and what it was given."""
    where = ".".join(str(part) for part in error["loc"]) or "the arguments"
    if error["type"] == "missing":
        return f"{where} is required"
    if error["type"] == "value_error":
        # Our validators raise ValueError with a whole sentence naming the value, not always the argument.
        sentence = str(error.get("ctx", {}).get("error", error["msg"]))
        return sentence if sentence.startswith(where) else f"{where}: {sentence}"
    given = repr(error["input"])
    if len(given) > _SHOWN_INPUT_LENGTH:
        given = given[: _SHOWN_INPUT_LENGTH - 3] + "..."
    message = error["msg"]
    # pydantic names the value's type before "should" ("Input", "String", "List"): the argument's name replaces it.
    subject, _, wanted_part = message.partition(" should ")
    wanted = f"should {wanted_part}" if wanted_part and " " not in subject else message
    return f"{where} {wanted} (got {given})"


def argument_problems(exc: ValidationError) -> str:
    """Every argument ``exc`` refused, in one line: ``cwd is required; format should be 'markdown' or ...``."""
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        problem = " ".join(_problem(error).split())  # one line, whatever a value held
        if problem not in problems:
            problems.append(problem)
    return "; ".join(problems)


def _invalid_arguments(exc: ValidationError) -> str:
    return f"invalid arguments: {argument_problems(exc)}"


def _message(tool: str, exc: ExpeditorError) -> str:
    if isinstance(exc, StaleAttempt):
        return (
            f"{exc}. Another call took this job over while {tool} was recording it; its record is theirs now: "
            "read it with get_dispatch instead of retrying"
        )
    if isinstance(exc, IllegalTransition):
        return f"{exc}. The job's record changed while {tool} ran: read it again with get_dispatch before retrying"
    if isinstance(exc, StoreUnavailable) and not isinstance(exc, ClaimRefused):
        return f"{exc} (the campaign store is unavailable: retry the {tool} call)"
    return str(exc)


def _translated(tool: str, exc: BaseException) -> ToolError | None:
    if isinstance(exc, ValidationError) and exc.title in _ARGUMENT_MODELS:
        return ToolError(_invalid_arguments(exc))
    if isinstance(exc, ExpeditorError):
        return ToolError(_message(tool, exc))
    if isinstance(exc, OSError):
        logger.error("%s failed on a system call", tool, exc_info=exc)
        where = f" on {exc.filename}" if exc.filename else ""
        return ToolError(f"{tool} failed: {exc.strerror or exc}{where}; fix that (permissions, disk space, the path)")
    return None


def _only_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception a task group wrapped, or None when it wrapped several."""
    leaves = list(group.exceptions)
    while len(leaves) == 1 and isinstance(leaves[0], BaseExceptionGroup):
        leaves = list(leaves[0].exceptions)
    return leaves[0] if len(leaves) == 1 else None


@contextlib.contextmanager
def tool_errors(tool: str) -> Generator[None]:
    """Turn what a tool raises into the sentence its caller reads."""
    try:
        yield
    except ToolError:
        raise
    except Exception as exc:
        # A task group inside the call wraps what one of its tasks raised: judge that exception.
        cause = (_only_leaf(exc) or exc) if isinstance(exc, ExceptionGroup) else exc
        translated = _translated(tool, cause)
        if translated is None:
            raise
        raise translated from cause


class ExpeditorMCPServer(MCPServer[Any]):
    """The SDK's server, with tool arguments refused in one sentence and renamed arguments still accepted.

    The SDK checks a call's arguments against the tool's schema before the tool runs and reports a
    refusal as pydantic's multi-line dump with documentation links; here it becomes one line naming
    each argument and what it accepts.
    """

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        for old, new in _RENAMED_ARGUMENTS.get(name, {}).items():
            if old in arguments and new not in arguments:
                arguments = {(new if key == old else key): value for key, value in arguments.items()}
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(exc, UnexpectedToolError) or not isinstance(cause, ValidationError):
                raise
            # Worded as the SDK words every other refusal, so a caller meets one form.
            raise ToolError(f"Error executing tool {name}: {_invalid_arguments(cause)}") from cause
