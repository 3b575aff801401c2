"""Settings are read once, from arguments, the environment and config.yaml, with clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from expeditor.config import RunPolicy, load_settings, validate_model
from expeditor.errors import InvalidInput


def test_defaults_match_the_settled_table(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    assert (settings.timeout, settings.stale_threshold, settings.idle_timeout) == (7200, 1200, None)
    assert (settings.poll_interval, settings.children_interval, settings.children_cpu_floor) == (0.5, 5, 0.05)
    assert (settings.marker_heartbeat_interval, settings.marker_freshness) == (10, 30)
    # Below the default timeout: a marker of unknown length never outlasts the session's own wall clock.
    assert settings.max_suppression_seconds == 3600 < settings.timeout
    assert (settings.kill_grace, settings.result_exit_grace, settings.shutdown_grace) == (3, 2, 0.05)
    assert (settings.progress_interval, settings.dispatch_timeout, settings.max_concurrent_dispatches) == (
        30,
        14400,
        4,
    )
    assert settings.markers_enabled
    assert (settings.http_host, settings.http_port, settings.http_token) == ("127.0.0.1", 8765, None)


def test_paths_are_absolute_and_marker_dir_follows_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(home="rel-home")
    assert settings.home == tmp_path / "rel-home"
    assert settings.markers_path == tmp_path / "rel-home" / "markers"
    assert settings.sessions_dir == tmp_path / "rel-home" / "sessions"


def test_the_environment_overrides_config_yaml_and_arguments_override_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.yaml").write_text("stale_threshold: 50\ntimeout: 60\nkill_grace: 1\n")
    monkeypatch.setenv("EXPEDITOR_HOME", str(tmp_path))
    monkeypatch.setenv("EXPEDITOR_TIMEOUT", "70")
    settings = load_settings(kill_grace=2)
    assert (settings.stale_threshold, settings.timeout, settings.kill_grace) == (50, 70, 2)


def test_the_idle_timeout_follows_the_stale_threshold_in_effect(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, idle_timeout=600)
    assert settings.run_policy().idle_timeout == 600
    assert settings.run_policy(stale_threshold=2400).idle_timeout == 2400
    assert settings.run_policy(stale_threshold=2400, idle_timeout=30).idle_timeout == 30
    assert load_settings(home=tmp_path, stale_threshold=90).run_policy().idle_timeout == 90


_OUT_OF_BOUNDS = [
    ("stale_threshold", 0),
    ("stale_threshold", 86401),
    ("idle_timeout", 86401),
    ("poll_interval", 61),
    ("children_interval", 0),
    ("children_cpu_floor", -0.1),
    ("marker_freshness", 86401),
    ("max_suppression_seconds", 30 * 86400 + 1),
    ("kill_grace", 601),
    ("result_exit_grace", -1),
]


def test_the_bound_checks_below_cover_every_bounded_run_policy_field_but_timeout_and_longest_call() -> None:
    # longest_call is no setting: it is derived from bounded ones (see the test of its figure below).
    derived_or_unbounded = {"timeout", "markers_enabled", "longest_call"}
    assert {name for name, _ in _OUT_OF_BOUNDS} == set(RunPolicy.model_fields) - derived_or_unbounded


@pytest.mark.parametrize(("field", "value"), _OUT_OF_BOUNDS)
def test_a_run_policy_keeps_the_bounds_of_its_setting(tmp_path: Path, field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        load_settings(home=tmp_path, **{field: value})
    valid = load_settings(home=tmp_path).run_policy().model_dump()
    with pytest.raises(ValidationError, match=field):
        RunPolicy.model_validate({**valid, field: value})


def test_per_call_overrides_are_held_to_the_same_bounds(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    with pytest.raises(ValidationError, match="stale_threshold"):
        settings.run_policy(stale_threshold=86401)
    with pytest.raises(ValidationError, match="idle_timeout"):
        settings.run_policy(idle_timeout=0)


def test_a_run_policy_fits_the_longest_dispatch_timeout(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, dispatch_timeout=30 * 86400)
    assert settings.run_policy(timeout=settings.dispatch_timeout).timeout == 30 * 86400
    with pytest.raises(ValidationError, match="timeout"):
        settings.run_policy(timeout=30 * 86400 + 1)
    longest = load_settings(home=tmp_path, dispatch_timeout=30 * 86400, kill_grace=600).run_policy()
    assert longest.longest_call == 30 * 86400 + 600


def test_the_longest_call_is_the_larger_of_timeout_and_dispatch_timeout_plus_kill_grace(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, timeout=100, dispatch_timeout=1000, kill_grace=3)
    assert settings.longest_call == 1003
    assert settings.run_policy().longest_call == 1003
    assert settings.run_policy(timeout=5000).longest_call == 5003
    assert load_settings(home=tmp_path, timeout=2000, dispatch_timeout=1000, kill_grace=3).longest_call == 2003
    assert load_settings(home=tmp_path).longest_call == 14400 + 3


def test_run_timings_are_flat_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPEDITOR_STALE_THRESHOLD", "5")
    monkeypatch.setenv("EXPEDITOR_KILL_GRACE", "1")
    monkeypatch.setenv("EXPEDITOR_MARKERS_ENABLED", "false")
    policy = load_settings(home=tmp_path).run_policy()
    assert (policy.stale_threshold, policy.idle_timeout, policy.kill_grace) == (5, 5, 1)
    assert not policy.markers_enabled
    monkeypatch.setenv("EXPEDITOR_STALE_THRESHOLD", "86401")
    with pytest.raises(ValidationError, match="stale_threshold"):
        load_settings(home=tmp_path)


def test_the_claude_command_is_split_like_a_shell(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, claude_command="python -m 'my agent' --debug")
    assert settings.claude_argv == ["python", "-m", "my agent", "--debug"]


def test_allowed_roots_come_from_a_colon_separated_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPEDITOR_ALLOWED_ROOTS", f"{tmp_path}:/var")
    assert load_settings(home=tmp_path).allowed_roots == (tmp_path.resolve(), Path("/var").resolve())


def test_http_allowed_names_come_from_comma_separated_variables_or_config_yaml_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.yaml").write_text("http_allowed_hosts: [team.example, '[fd00::1]:8765']\n")
    assert load_settings(home=tmp_path).http_allowed_hosts == ("team.example", "[fd00::1]:8765")
    monkeypatch.setenv("EXPEDITOR_HTTP_ALLOWED_HOSTS", "a.example, b.example:8765")
    monkeypatch.setenv("EXPEDITOR_HTTP_ALLOWED_ORIGINS", "https://a.example,http://b.example:*")
    settings = load_settings(home=tmp_path)
    assert settings.http_allowed_hosts == ("a.example", "b.example:8765")
    assert settings.http_allowed_origins == ("https://a.example", "http://b.example:*")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("http_allowed_hosts", ["https://team.example"]),
        ("http_allowed_hosts", ["team.example:port"]),
        ("http_allowed_hosts", ["fd00::1"]),
        ("http_allowed_origins", ["team.example"]),
        ("http_allowed_origins", ["ftp://team.example"]),
        ("stale_threshold", 0),
        ("timeout", -1),
        ("http_port", 70000),
        ("claude_command", "   "),
        ("permission_mode", "yolo"),
    ],
)
def test_out_of_bounds_settings_are_refused(tmp_path: Path, field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        load_settings(home=tmp_path, **{field: value})


def test_a_malformed_config_yaml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("- just\n- a list\n")
    with pytest.raises(InvalidInput, match=r"config\.yaml"):
        load_settings(home=tmp_path)


def test_an_unknown_setting_in_config_yaml_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("stale_treshold: 10\n")
    with pytest.raises(ValidationError, match="stale_treshold"):
        load_settings(home=tmp_path)


@pytest.mark.parametrize("model", ["sonnet", "opus", "haiku", "claude-sonnet-4-5", "claude-opus-4-1-20250805"])
def test_known_models_are_accepted(model: str) -> None:
    assert validate_model(model) == model


@pytest.mark.parametrize("model", ["gpt-4", "Sonnet", "claude-", ""])
def test_other_models_are_refused_with_the_list(model: str) -> None:
    with pytest.raises(InvalidInput, match="sonnet, opus, haiku"):
        validate_model(model)
