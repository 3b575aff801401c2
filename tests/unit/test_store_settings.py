"""The shared store's settings: its URL shown and passed on without the password, the store it chooses, hosts."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from expeditor.config import load_settings
from expeditor.errors import InvalidInput
from expeditor.executor.claude import SECRET_SETTINGS
from expeditor.executor.models import SessionKind
from expeditor.runs import child_mcp_config, settings_environment
from expeditor.state import Owner, SqliteCampaignStore, open_store
from expeditor.state.store_url import redacted_url, scrubbed, url_scheme, without_password

SECRET = "s3cr3t-p4ss"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://alice:{SECRET}@db.example.com:6543/campaigns", "alice@db.example.com:6543/campaigns"),
        (f"postgres://alice:{SECRET}@db.example.com/campaigns", "alice@db.example.com:5432/campaigns"),
        ("postgresql://alice@127.0.0.1/campaigns?sslmode=require", "alice@127.0.0.1:5432/campaigns"),
        (f"postgresql://db.example.com/campaigns?user=bob&password={SECRET}", "bob@db.example.com:5432/campaigns"),
        (f"postgresql://al%40ice:{SECRET}@[::1]:5433/c", "al@ice@[::1]:5433/c"),
        (f"postgresql://alice:{SECRET}@h1:5432,h2:5433/c", "alice@h1:5432,h2:5433/c"),
        ("postgresql:///campaigns?host=/var/run/postgresql", "/var/run/postgresql/campaigns"),
    ],
)
def test_a_store_url_is_shown_as_user_host_port_and_database_only(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
    assert SECRET not in redacted_url(url)


@pytest.mark.parametrize(
    ("url", "passed_on"),
    [
        (f"postgresql://alice:{SECRET}@db:6543/c", "postgresql://alice@db:6543/c"),
        (f"postgresql://alice:{SECRET}@db/c?sslmode=require", "postgresql://alice@db/c?sslmode=require"),
        (f"postgresql://alice@db/c?password={SECRET}&sslmode=require", "postgresql://alice@db/c?sslmode=require"),
        ("postgres://alice@db/c", "postgres://alice@db/c"),
        (f"postgresql://alice:{SECRET}@h1,h2:5433/c", "postgresql://alice@h1,h2:5433/c"),
    ],
)
def test_a_child_gets_the_store_url_without_its_password(url: str, passed_on: str) -> None:
    assert without_password(url) == passed_on


def test_url_schemes_are_read_case_blind_and_a_missing_one_is_empty() -> None:
    assert url_scheme("PostgreSQL://h/db") == "postgresql"
    assert url_scheme("db.example.com/campaigns") == ""


def test_the_store_url_is_a_secret_setting_and_never_reaches_a_child_with_its_password(tmp_path: Path) -> None:
    settings = load_settings(
        home=tmp_path, store_url=f"postgresql://alice:{SECRET}@db:6543/c", host_name="host-b", lease_ttl=20
    )
    assert "store_url" in SECRET_SETTINGS
    assert SECRET not in repr(settings)
    env = settings_environment(settings)
    assert env["EXPEDITOR_STORE_URL"] == "postgresql://alice@db:6543/c"
    assert env["EXPEDITOR_HOST_NAME"] == "host-b"  # a nested server is the same host, by the same name
    assert env["EXPEDITOR_LEASE_TTL"] == "20.0"
    config = child_mcp_config(settings, kind=SessionKind.ORCHESTRATOR)
    assert SECRET not in json.dumps(config)
    # A nested server reading that environment opens the same store, by the same URL less the password.
    nested = load_settings(**{name.removeprefix("EXPEDITOR_").lower(): value for name, value in env.items()})
    assert nested.store_url is not None
    assert nested.store_url.get_secret_value() == "postgresql://alice@db:6543/c"


def test_store_settings_have_their_defaults_and_the_environment_sets_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(home=tmp_path)
    assert settings.store_url is None
    assert (settings.store_schema, settings.store_pool_size, settings.store_timeout) == ("expeditor", 8, 5)
    assert (settings.lease_interval, settings.lease_ttl, settings.run_progress_interval) == (10, 30, 30)
    assert settings.host_name == socket.gethostname()
    monkeypatch.setenv("EXPEDITOR_STORE_URL", f"postgresql://alice:{SECRET}@db/c")
    monkeypatch.setenv("EXPEDITOR_HOST_NAME", "host-b")
    monkeypatch.setenv("EXPEDITOR_STORE_SCHEMA", "team_a")
    from_env = load_settings(home=tmp_path)
    assert from_env.store_url is not None
    assert from_env.store_url.get_secret_value() == f"postgresql://alice:{SECRET}@db/c"
    assert (from_env.host_name, from_env.store_schema) == ("host-b", "team_a")


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"lease_interval": 10, "lease_ttl": 10}, "must be longer than lease_interval"),
        ({"store_schema": "Robert'); DROP"}, "store_schema"),
        ({"store_pool_size": 0}, "store_pool_size"),
        ({"host_name": ""}, "host_name"),
    ],
)
def test_store_settings_out_of_bounds_are_refused(tmp_path: Path, overrides: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint.replace("(", r"\(")):
        load_settings(home=tmp_path, **overrides)


def test_without_a_store_url_the_store_is_sqlite_under_home_and_knows_this_host_by_its_setting(tmp_path: Path) -> None:
    store = open_store(load_settings(home=tmp_path, host_name="host-a"))
    try:
        assert isinstance(store, SqliteCampaignStore)
        assert store.path == tmp_path / "state.sqlite3"
        assert store.host == "host-a"
        # An owner on "host-a" is checked by pid; the same live pid on another host name is not this one's.
        me = Owner.current(store.host)
        assert me.host == "host-a"
    finally:
        store.close()


@pytest.mark.parametrize("url", [f"mysql://alice:{SECRET}@db/c", f"sqlite:///{SECRET}.db", "db.example.com/c"])
def test_a_store_url_of_another_scheme_is_refused_naming_the_two_accepted(tmp_path: Path, url: str) -> None:
    with pytest.raises(InvalidInput, match=r"expected postgresql:// or postgres://") as refused:
        open_store(load_settings(home=tmp_path, store_url=url))
    assert SECRET not in str(refused.value)
    assert not (tmp_path / "state.sqlite3").exists()


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        (f"postgresql://alice:{SECRET}%zz@127.0.0.1:1/c", "invalid percent-encoded token"),
        (f"postgresql://alice:{SECRET}@[::1/c", 'matching "]" in IPv6 host address'),
        (f"postgresql://alice@127.0.0.1:1/c?password={SECRET}&bogus=1", 'invalid URI query parameter: "bogus"'),
    ],
)
def test_a_store_url_libpq_cannot_parse_is_refused_at_once_without_quoting_its_password(
    tmp_path: Path, url: str, complaint: str, caplog: pytest.LogCaptureFixture
) -> None:
    # libpq's own complaint quotes what it could not parse (here the password, or the whole URL): left
    # to the pool, it would reach the log and every lookup's warning.
    with pytest.raises(InvalidInput, match="cannot be read") as refused:
        open_store(load_settings(home=tmp_path, store_url=url))
    assert complaint in str(refused.value)
    assert SECRET not in str(refused.value)
    assert SECRET not in caplog.text


def test_scrubbing_removes_the_password_as_written_and_decoded_and_the_whole_url() -> None:
    url = "postgresql://alice:p%40ss@db/c?password=other"
    said = 'token "p%40ss", then "p@ss", "other" and ' + url
    assert scrubbed(said, url) == 'token "***", then "***", "***" and ***'
