"""Which binds need a token, and which Host and Origin values a server accepts for its bind."""

from __future__ import annotations

import pytest

from expeditor.errors import InvalidInput
from expeditor.server.http_access import check_bind_is_protected, is_loopback, transport_security


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("expeditor.lan", False),  # a name may resolve anywhere
    ],
)
def test_only_loopback_addresses_and_localhost_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_token_or_a_loopback_bind_needs_no_flag_and_anything_else_does() -> None:
    check_bind_is_protected("127.0.0.1", token=None, insecure_no_token=False)
    check_bind_is_protected("0.0.0.0", token="t", insecure_no_token=False)
    check_bind_is_protected("0.0.0.0", token=None, insecure_no_token=True)
    with pytest.raises(InvalidInput, match="EXPEDITOR_HTTP_TOKEN"):
        check_bind_is_protected("0.0.0.0", token="", insecure_no_token=False)


def test_a_loopback_bind_admits_loopback_names_and_the_team_names() -> None:
    security = transport_security(
        "127.0.0.1", 8765, allowed_hosts=("team.example", "ci.example:9000"), allowed_origins=("https://team.example",)
    )
    assert security.enable_dns_rebinding_protection
    assert security.allowed_hosts == [
        "127.0.0.1:8765",
        "127.0.0.1:*",
        "localhost:*",
        "[::1]:*",
        "team.example",
        "team.example:*",
        "ci.example:9000",
    ]
    assert "http://localhost:*" in security.allowed_origins
    assert security.allowed_origins[-2:] == ["https://team.example", "https://team.example:*"]


def test_a_wildcard_bind_admits_its_own_address_and_no_loopback_name() -> None:
    security = transport_security("::", 8765, allowed_hosts=(), allowed_origins=())
    assert security.enable_dns_rebinding_protection
    assert security.allowed_hosts == ["[::]:8765"]
    assert security.allowed_origins == ["http://[::]:8765"]
