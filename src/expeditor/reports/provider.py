"""Whether a session's tokens were counted by Anthropic or by another provider behind the same CLI.

Claude Code talks to whatever ``ANTHROPIC_BASE_URL`` names, and gateways serve other vendors'
models under the Anthropic API; their token counts come from other tokenizers and price lists,
so reports flag such sessions instead of adding them up silently with Anthropic's.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["is_anthropic_base_url", "is_anthropic_model", "public_base_url"]

_ANTHROPIC_DOMAIN = "anthropic.com"
_ALIASES = frozenset({"default", "sonnet", "opus", "haiku"})
# A Claude model id, alone or behind a cloud's or gateway's vendor prefix:
# claude-sonnet-4-5, anthropic.claude-…, us.anthropic.claude-…, anthropic/claude-….
_CLAUDE_ID = re.compile(r"(?:^|[./])claude-", re.IGNORECASE)


def _location(url: str) -> tuple[str, str, int | None] | None:
    """Scheme, lower-case host and port of ``url``; None when it names no host."""
    # A bare host ("api.anthropic.com") would parse as a path: read it as https.
    parts = urlsplit(url if "://" in url else f"https://{url}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, an unbalanced IPv6 bracket
        return None
    return (parts.scheme, host.rstrip(".").lower(), port) if host else None


def is_anthropic_base_url(url: str | None) -> bool:
    """True when no base URL was set, or when it points at anthropic.com or one of its subdomains."""
    if url is None or not url.strip():
        return True
    location = _location(url.strip())
    if location is None:
        return False
    host = location[1]
    return host == _ANTHROPIC_DOMAIN or host.endswith("." + _ANTHROPIC_DOMAIN)


def is_anthropic_model(model: str) -> bool:
    """True for Claude Code's aliases (``sonnet``, ``opus``, ``haiku``, ``default``) and Claude model ids."""
    name = model.strip().lower()
    return name in _ALIASES or _CLAUDE_ID.search(name) is not None


def public_base_url(url: str) -> str:
    """``scheme://host[:port]`` of a base URL, fit to print: no credentials, path or query."""
    location = _location(url.strip())
    if location is None:
        return "an unparsable URL"
    scheme, host, port = location
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")
