"""The tool parameters several tools share, each described once with its bounds: the schema a model reads.

Bounds that the run's own models also check (RunRequest, RunPolicy) are repeated here so the
schema states them; the limits themselves live in config.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from expeditor.config import MODEL_ALIASES
from expeditor.ids import MAX_IDENTIFIER_LENGTH

__all__ = [
    "AddDirs",
    "Campaign",
    "Cwd",
    "JobName",
    "MaxBudgetUsd",
    "Model",
    "OutputSchema",
    "SessionId",
    "StaleThreshold",
    "Timeout",
]

_ID_RULE = f"1 to {MAX_IDENTIFIER_LENGTH} of A-Z, a-z, 0-9, '_' and '-'"
_LONGEST_STALE_THRESHOLD = 86400
_LONGEST_TIMEOUT = 30 * 86400

Campaign = Annotated[
    str,
    Field(
        min_length=1,
        description=f'The campaign: a name grouping related jobs and their records ({_ID_RULE}), e.g. "release-7".',
    ),
]
JobName = Annotated[
    str,
    Field(min_length=1, description=f'The job\'s name within its campaign ({_ID_RULE}), e.g. "fix-issue-42".'),
]
Cwd = Annotated[
    str,
    Field(
        min_length=1,
        description="Absolute path of the project directory the session works in; it must exist and lie under the "
        "server's allowed roots (by default the directory the server was started in).",
    ),
]
Model = Annotated[
    str | None,
    Field(
        description=f"The model: {', '.join(MODEL_ALIASES)}, or a full model id such as 'claude-sonnet-4-5'. "
        "Default: Claude Code's own.",
    ),
]
StaleThreshold = Annotated[
    float | None,
    Field(
        gt=0,
        le=_LONGEST_STALE_THRESHOLD,
        description="Seconds the session may stay silent (no transcript, stdout or child-process activity) before "
        "it is killed as stuck. Default: the server's setting (1200 unless configured).",
    ),
]
Timeout = Annotated[
    float | None,
    Field(
        gt=0,
        le=_LONGEST_TIMEOUT,
        description="Wall-clock limit of the session in seconds; it is killed when it runs longer. Default: the "
        "server's setting (7200 unless configured).",
    ),
]
AddDirs = Annotated[
    list[str] | None,
    Field(description="Extra directories the session may read and write (Claude Code's --add-dir), absolute paths."),
]
OutputSchema = Annotated[
    dict[str, Any] | None,
    Field(
        description="A JSON Schema of an object the session must answer with (Claude Code's --json-schema): the "
        "answer comes back as structured_output. Give a recipe step's result schema exactly as the step states it.",
    ),
]
MaxBudgetUsd = Annotated[
    float | None,
    Field(
        gt=0,
        description="The session's own budget in USD (Claude Code's --max-budget-usd): Claude Code stops it there. "
        "Give a recipe step's budget as the step states it.",
    ),
]
SessionId = Annotated[
    str | None,
    Field(
        min_length=1,
        description="Continue this earlier session (the session_id a previous run_skill returned) instead of "
        "starting a fresh one.",
    ),
]
