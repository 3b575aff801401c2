"""Who an HTTP caller is comes from its bearer token alone: the server's (a top-level caller) or a session's."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.fake import fake_settings

from expeditor.errors import InvalidInput
from expeditor.executor import SessionKind
from expeditor.runs.caller import CallerContext
from expeditor.runs.child_config import child_mcp_config
from expeditor.runs.credentials import SessionCredential, SessionCredentials, new_session_token

SERVER_TOKEN = "the-server-token"
SERVER = CallerContext(session_id=None, kind=None, may_cancel_any=True)


def sessions_with(token: str, credential: SessionCredential) -> SessionCredentials:
    sessions = SessionCredentials()
    sessions.grant(token, credential)
    return sessions


def test_a_session_token_is_exactly_its_session_with_its_kind_and_launchers() -> None:
    token = new_session_token()
    sessions = sessions_with(token, SessionCredential("skill-1", SessionKind.SKILL, ("orch-1",)))
    caller = SERVER.over_http(f"Bearer {token}", server_token=SERVER_TOKEN, sessions=sessions)
    assert caller == CallerContext("skill-1", SessionKind.SKILL, ("orch-1",), may_cancel_any=False)
    with pytest.raises(InvalidInput, match="skill session"):
        caller.require("run_skill")
    assert caller.chain() == ("skill-1", "orch-1")


def test_an_orchestrator_token_may_call_run_skill_and_not_dispatch() -> None:
    token = new_session_token()
    sessions = sessions_with(token, SessionCredential("orch-1", SessionKind.ORCHESTRATOR, ()))
    caller = SERVER.over_http(f"Bearer {token}", server_token=None, sessions=sessions)
    assert caller is not None
    caller.require("run_skill")
    with pytest.raises(InvalidInput, match="only a top-level caller may dispatch"):
        caller.require("dispatch")


def test_the_server_token_or_no_token_on_a_tokenless_server_is_a_top_level_caller_naming_nobody() -> None:
    sessions = SessionCredentials()
    for authorization, server_token in ((f"Bearer {SERVER_TOKEN}", SERVER_TOKEN), (None, None)):
        caller = SERVER.over_http(authorization, server_token=server_token, sessions=sessions)
        assert caller == CallerContext(None, None, may_cancel_any=True)


def test_a_top_level_caller_keeps_the_kind_of_the_servers_own_environment() -> None:
    started_by_a_skill = CallerContext.from_env({"EXPEDITOR_SESSION_KIND": "skill", "EXPEDITOR_SESSION_ID": "s-1"})
    caller = started_by_a_skill.over_http(None, server_token=None, sessions=SessionCredentials())
    assert caller is not None
    assert (caller.session_id, caller.kind) == (None, SessionKind.SKILL)


@pytest.mark.parametrize(
    ("authorization", "server_token"),
    [
        (None, SERVER_TOKEN),  # a server with a token needs one
        ("Bearer made-up", SERVER_TOKEN),
        ("Bearer made-up", None),  # an unknown token is refused, not taken for a person's
        (f"Basic {SERVER_TOKEN}", SERVER_TOKEN),
    ],
)
def test_a_missing_unknown_or_malformed_token_proves_nobody(
    authorization: str | None, server_token: str | None
) -> None:
    assert SERVER.over_http(authorization, server_token=server_token, sessions=SessionCredentials()) is None


def test_a_revoked_token_proves_nobody() -> None:
    token = new_session_token()
    sessions = sessions_with(token, SessionCredential("orch-1", SessionKind.ORCHESTRATOR, ()))
    sessions.revoke(token)
    assert SERVER.over_http(f"Bearer {token}", server_token=None, sessions=sessions) is None
    assert len(sessions) == 0


def test_a_session_may_cancel_only_what_it_launched_directly_or_through_its_children() -> None:
    orchestrator = CallerContext("orch-1", SessionKind.ORCHESTRATOR, ("top",))
    assert orchestrator.may_cancel(("orch-1",))
    assert orchestrator.may_cancel(("skill-1", "orch-1", "top"))
    assert not orchestrator.may_cancel(("orch-2",))
    assert not orchestrator.may_cancel(())
    assert SERVER.may_cancel(("orch-2",))
    assert CallerContext.from_env({}).may_cancel(())  # the one client of a stdio server


def test_the_http_child_entry_carries_the_session_token_and_no_caller_header(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path, http_token=SERVER_TOKEN)
    config = child_mcp_config(
        settings, kind=SessionKind.ORCHESTRATOR, http_url="http://127.0.0.1:1/mcp", session_token="own-token"
    )
    assert config is not None
    assert config["mcpServers"]["expeditor"]["headers"] == {"authorization": "Bearer own-token"}
    assert SERVER_TOKEN not in str(config)
