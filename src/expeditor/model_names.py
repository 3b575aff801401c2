"""The models a run may name: Claude Code's aliases or a full model id, refused otherwise with the list."""

from __future__ import annotations

from expeditor.errors import InvalidInput

__all__ = ["MODEL_ALIASES", "validate_model"]

MODEL_ALIASES = ("sonnet", "opus", "haiku")
_FULL_MODEL_PREFIX = "claude-"


def validate_model(model: str) -> str:
    """Accept the aliases Claude Code knows or a full model id; refuse anything else with the list."""
    if model in MODEL_ALIASES or (model.startswith(_FULL_MODEL_PREFIX) and len(model) > len(_FULL_MODEL_PREFIX)):
        return model
    raise InvalidInput(
        f"model {model!r} is not known: expected one of {', '.join(MODEL_ALIASES)} "
        "or a full model id such as 'claude-sonnet-4-5'"
    )
