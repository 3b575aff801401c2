"""The tools' error boundary: every error a tool meets reaches the calling model as a sentence it can act on."""

from __future__ import annotations

import errno

import pytest
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, ValidationError

from expeditor.errors import ClaimRefused, IllegalTransition, InvalidInput, StaleAttempt, StoreUnavailable
from expeditor.executor import RunRequest
from expeditor.server.boundary import tool_errors


def message_of(exc: BaseException) -> str:
    with pytest.raises(ToolError) as caught, tool_errors("dispatch"):
        raise exc
    return str(caught.value)


def test_an_expeditor_error_reads_as_its_own_sentence() -> None:
    assert message_of(InvalidInput("cwd /x is outside the allowed roots")) == "cwd /x is outside the allowed roots"


def test_a_fenced_write_tells_the_model_to_read_the_record_instead_of_retrying() -> None:
    message = message_of(StaleAttempt("attempt 2 of c/j is no longer current (attempt 3 is)"))
    assert message.startswith("attempt 2 of c/j is no longer current")
    assert "read it with get_dispatch instead of retrying" in message


def test_an_illegal_transition_tells_the_model_to_read_the_record_again() -> None:
    message = message_of(IllegalTransition("c/j cannot go from success to running"))
    assert "read it again with get_dispatch before retrying" in message


def test_an_unavailable_store_says_to_retry_and_a_refused_claim_keeps_its_own_words() -> None:
    assert "retry the dispatch call" in message_of(StoreUnavailable("the campaign store is locked"))
    refused = "the claim was not recorded, so nothing was launched: retry the dispatch"
    assert message_of(ClaimRefused(refused)) == refused


def test_a_failed_system_call_names_what_failed_and_where() -> None:
    message = message_of(PermissionError(errno.EACCES, "Permission denied", "/home/x/markers"))
    assert message.startswith("dispatch failed: Permission denied on /home/x/markers")


def test_an_error_wrapped_by_a_task_group_is_judged_by_what_it_wraps() -> None:
    group = ExceptionGroup("unhandled errors in a TaskGroup", [OSError(errno.ENOSPC, "No space left on device")])
    assert message_of(group).startswith("dispatch failed: No space left on device")


def test_invalid_arguments_name_each_field() -> None:
    with pytest.raises(ValidationError) as invalid:
        RunRequest.model_validate({"prompt": "/x", "cwd": "/tmp", "timeout": "soon"})
    message = message_of(invalid.value)
    assert (
        message
        == "invalid arguments: timeout should be a valid number, unable to parse string as a number (got 'soon')"
    )


def test_a_too_short_value_is_named_by_its_argument_not_its_type() -> None:
    with pytest.raises(ValidationError) as invalid:
        RunRequest.model_validate({"prompt": "", "cwd": "/tmp"})
    assert message_of(invalid.value) == "invalid arguments: prompt should have at least 1 character (got '')"


def test_a_validator_sentence_names_the_argument_once_without_pydantic_words() -> None:
    with pytest.raises(ValidationError) as invalid:
        RunRequest.model_validate({"prompt": "/x", "cwd": "/tmp", "model": "sonet", "resume_session_id": "../x"})
    message = message_of(invalid.value)
    assert message.startswith("invalid arguments: model 'sonet' is not known: expected one of sonnet")
    assert "; resume_session_id: session id '../x' is not valid" in message
    assert "Value error" not in message


def test_a_validation_error_of_any_other_model_is_a_bug_not_bad_input() -> None:
    class Internal(BaseModel):
        count: int

    with pytest.raises(ValidationError) as invalid:
        Internal.model_validate({"count": "many"})
    with pytest.raises(ValidationError), tool_errors("dispatch"):
        raise invalid.value


def test_a_bug_is_left_to_the_sdk_with_its_traceback() -> None:
    with pytest.raises(KeyError), tool_errors("dispatch"):
        raise KeyError("a bug")
