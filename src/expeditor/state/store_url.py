"""A shared store's URL as expeditor shows and passes it on: never with its password.

``postgresql://user:password@host:port/db?options`` (libpq's URI form; ``postgres://`` too). Logs and
errors name the server as ``user@host:port/db``; a child process gets the URL without its password
(libpq then reads the password from ``PGPASSFILE``, ``~/.pgpass`` or ``PGSERVICEFILE``), so the
secret never lands in a generated config, a log file or a message.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

__all__ = ["POSTGRES_SCHEMES", "redacted_url", "scrubbed", "url_scheme", "without_password"]

POSTGRES_SCHEMES = ("postgresql", "postgres")
_DEFAULT_PORT = "5432"
_SECRET_PARAMETERS = frozenset({"password"})


def url_scheme(url: str) -> str:
    """The URL's scheme in lower case ('' when it has none)."""
    scheme, separator, _ = url.partition("://")
    return scheme.lower() if separator and scheme.replace("+", "").isalnum() else ""


def _split_netloc(netloc: str) -> tuple[str, str | None, str]:
    """``(user, password or None, hosts)``; ``hosts`` may list several ``host:port`` separated by commas."""
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return "", None, netloc
    user, colon, password = userinfo.partition(":")
    return user, (password if colon else None), hosts


def without_password(url: str) -> str:
    """``url`` with no password in it, neither after the user name nor as a ``password`` parameter."""
    parts = urlsplit(url)
    user, _, hosts = _split_netloc(parts.netloc)
    netloc = f"{user}@{hosts}" if user else hosts
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(name, value) for name, value in query if name.lower() not in _SECRET_PARAMETERS]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(kept) if len(kept) != len(query) else parts.query))


def redacted_url(url: str) -> str:
    """The server a URL names, as logs and errors show it: ``user@host:port/db``, nothing more."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "an unreadable store URL"
    parameters = {name.lower(): value for name, value in parse_qsl(parts.query)}
    user_text, _, hosts = _split_netloc(parts.netloc)
    user = parameters.get("user") or unquote(user_text)
    host_list = unquote(hosts) or parameters.get("host", "localhost")
    if "," not in host_list and not host_list.startswith("/") and not _has_port(host_list):
        host_list = f"{host_list}:{parameters.get('port', _DEFAULT_PORT)}"
    database = parameters.get("dbname") or unquote(parts.path.lstrip("/")) or user
    return f"{user}@{host_list}/{database}" if user else f"{host_list}/{database}"


def scrubbed(text: str, url: str) -> str:
    """``text`` with ``url``'s password (as written and decoded) and ``url`` itself replaced by ``***``.

    libpq quotes what it cannot parse, which may be the password (``invalid percent-encoded token``) or
    the whole URL: its complaints pass through here before anyone sees them.
    """
    authority = re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0]
    password = _split_netloc(authority)[1]
    secrets = {url} | ({password, unquote(password)} if password else set[str]())
    for name, value in parse_qsl(url.partition("?")[2], keep_blank_values=True):
        if name.lower() in _SECRET_PARAMETERS and value:
            secrets.add(value)
    for secret in sorted(secrets, key=len, reverse=True):  # the URL first: it contains the others
        text = text.replace(secret, "***")
    return text


def _has_port(host: str) -> bool:
    after_address = host.rpartition("]")[2] if host.startswith("[") else host
    return ":" in after_address
