"""The tools' error boundary: what the calling model reads when a tool cannot do what it was asked.

Every ``ExpeditorError`` becomes a ``ToolError`` whose text is the error's own sentence; the two
that mean "the record moved under this call" are said in words a model can act on. Arguments that
a run's models refuse (a RunRequest, a RunPolicy) are named field by field. A failed system call
becomes a ToolError that names what failed, instead of the SDK's bare "Error executing tool".
Anything else is a bug, left to the SDK, which logs it with its traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Generator

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import ValidationError

from expeditor.errors import ClaimRefused, ExpeditorError, IllegalTransition, StaleAttempt, StoreUnavailable

__all__ = ["tool_errors"]

logger = logging.getLogger(__name__)

# The models a tool's arguments are checked by; a ValidationError of any other model is a bug, not bad input.
_ARGUMENT_MODELS = frozenset({"RunRequest", "RunPolicy"})


def _invalid_arguments(exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'input'}: {error['msg']}" for error in exc.errors()
    )
    return f"invalid arguments: {problems}"


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
