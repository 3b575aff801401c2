"""Which sessions Anthropic served: by the API base URL they were given and the models they report."""

from __future__ import annotations

import pytest

from expeditor.reports.provider import is_anthropic_base_url, is_anthropic_model, public_base_url


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        "  ",
        "https://api.anthropic.com",
        "https://API.Anthropic.com./v1",
        "api.anthropic.com",
        "https://anthropic.com",
    ],
)
def test_no_base_url_or_an_anthropic_host_is_anthropic(url: str | None) -> None:
    assert is_anthropic_base_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:4000",
        "https://openrouter.ai/api/v1",
        "https://api.z.ai/api/anthropic",
        "https://evil-anthropic.com",  # a look-alike, not a subdomain
        "https://anthropic.com.example.net",
        "http://localhost:notaport",  # unparsable: not provably Anthropic
    ],
)
def test_any_other_host_is_another_provider(url: str) -> None:
    assert not is_anthropic_base_url(url)


@pytest.mark.parametrize(
    "model",
    [
        "sonnet",
        "opus",
        "haiku",
        "default",
        "claude-sonnet-4-5",
        "claude-opus-4-5-20251101",
        "anthropic.claude-3-5-sonnet-20241022-v2:0",  # Bedrock
        "us.anthropic.claude-sonnet-4-20250514-v1:0",
        "anthropic/claude-sonnet-4.5",  # a gateway's name for it
    ],
)
def test_aliases_and_claude_ids_are_anthropic_models(model: str) -> None:
    assert is_anthropic_model(model)


@pytest.mark.parametrize("model", ["glm-4.6", "gpt-5", "deepseek-chat", "kimi-k2", "not-claude-really"])
def test_other_models_are_not(model: str) -> None:
    assert not is_anthropic_model(model)


def test_a_printed_base_url_keeps_only_scheme_host_and_port() -> None:
    assert public_base_url("https://user:secret@api.z.ai/api/anthropic?key=k") == "https://api.z.ai"
    assert public_base_url("http://127.0.0.1:4000/v1") == "http://127.0.0.1:4000"
    assert public_base_url("http://[::1]:8080") == "http://[::1]:8080"
    assert public_base_url("gateway.internal") == "https://gateway.internal"
    assert public_base_url("http://host:port") == "an unparsable URL"
