"""A scripted stand-in for the Anthropic Messages API, so the real Claude Code CLI runs offline.

Point the CLI at it with ``ANTHROPIC_BASE_URL=<base_url>`` (see ``offline_cli_env``). Each streaming
``POST /v1/messages`` of the main conversation takes the next reply from the script and answers with
the SSE stream Claude Code expects::

    message_start · (content_block_start · content_block_delta · content_block_stop) per block
    · message_delta (stop_reason, usage) · message_stop

Anything else (``HEAD /api/hello``, token counting, non-streaming or small ``max_tokens`` side calls)
gets a canned answer and consumes nothing. Every request is recorded. Observed on 2.1.332: a ``-p`` run
sends one request per model turn, plus ``HEAD /api/hello`` unless nonessential traffic is disabled.

A reply is a ``Reply`` (text and tool_use blocks with usage figures, optionally after a ``delay``; sent
as JSON if the request is not streaming), a ``Failure`` (an HTTP error answer) or ``HANG`` (never answers,
until the server closes). An exhausted script answers HTTP 400: 2.1.332 retries that only a few times,
within a second, then ends with an error result and exit status 1, so a test that scripted too little
fails fast.

Several sessions at once (a session that launches others, all pointed at one stand-in) each get their
own script through ``route``: a route claims every session whose first main request it matches, and
that session's later requests follow it, told apart by the ``x-claude-code-session-id`` header the CLI
sends. Sessions no route claims take the default script (``add``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import asdict, astuple, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "HANG",
    "SESSION_HEADER",
    "Failure",
    "Hang",
    "RecordedRequest",
    "Reply",
    "RequestMatch",
    "ScriptedMessagesAPI",
    "Text",
    "ToolUse",
    "Usage",
    "is_main_conversation",
    "mentions",
    "offline_cli_env",
    "scripted_messages_api",
]

_DROPPED_ENV_PREFIXES: Final = ("ANTHROPIC_", "CLAUDE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
_SIDE_CALL_MAX_TOKENS: Final = 4096
"""Main-conversation requests ask for the model's whole output budget; side calls ask for little."""
SESSION_HEADER: Final = "x-claude-code-session-id"
"""The header in which 2.1.332 names the session a request belongs to."""


@dataclass(frozen=True)
class Usage:
    """Token figures of one reply, as the API reports them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(mine + theirs for mine, theirs in zip(astuple(self), astuple(other), strict=True)))

    def as_api(self, *, output_tokens: int | None = None) -> dict[str, int]:
        figures = asdict(self)
        return figures if output_tokens is None else figures | {"output_tokens": output_tokens}


@dataclass(frozen=True)
class Text:
    """A text content block."""

    text: str


@dataclass(frozen=True)
class ToolUse:
    """A tool_use content block; the CLI runs the tool and sends its result in the next request."""

    name: str
    input: Mapping[str, Any]
    id: str = ""
    """Empty: a unique ``toolu_…`` id is made up when the reply is sent."""


Block = Text | ToolUse


@dataclass(frozen=True)
class Reply:
    """One assistant message. ``stop_reason`` defaults to tool_use when a block is one, else end_turn."""

    blocks: tuple[Block, ...]
    usage: Usage = field(default_factory=lambda: Usage(10, 5))
    stop_reason: str | None = None
    delay: float = 0.0
    """Seconds the stand-in waits, silent, before it answers (a slow model); its close cuts the wait short."""

    @classmethod
    def text(cls, text: str, usage: Usage | None = None, *, delay: float = 0.0) -> Reply:
        return cls((Text(text),), usage or Usage(10, 5), delay=delay)

    @property
    def effective_stop_reason(self) -> str:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if any(isinstance(block, ToolUse) for block in self.blocks) else "end_turn"


@dataclass(frozen=True)
class Failure:
    """An error answer in the API's shape (500 api_error; 529 overloaded_error; 400 is not retried)."""

    status: int = 500
    error_type: str = "api_error"
    message: str = "scripted failure"


@dataclass(frozen=True)
class Hang:
    """Never answer: the request stays open, silent, until the stand-in closes."""


HANG: Final = Hang()

Scripted = Reply | Failure | Hang
JSONBody = Mapping[str, Any] | None
RequestKind = Literal["main", "side"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received, and what answered it (``None``: a canned side answer)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: JSONBody
    kind: RequestKind
    answer: Scripted | None
    route: str | None = None
    """The route whose script answered it; None for the default script and side calls."""
    received_at: float = 0.0
    """When it arrived (epoch seconds), before any scripted delay."""

    @property
    def session_id(self) -> str | None:
        """The session the CLI says the request belongs to (``x-claude-code-session-id``)."""
        return self.headers.get(SESSION_HEADER)

    @property
    def tool_results(self) -> list[Mapping[str, Any]]:
        """The ``tool_result`` blocks of the request's last message: what the tools of the previous reply returned."""
        messages = self.body.get("messages") if self.body is not None else None
        if not isinstance(messages, list) or not messages:
            return []
        last: Any = messages[-1]
        content: Any = last.get("content") if isinstance(last, dict) else None
        if not isinstance(content, list):
            return []
        return [block for block in content if isinstance(block, dict) and block.get("type") == "tool_result"]

    @property
    def text(self) -> str:
        """Every text in the request's messages and system prompt, joined: for 'was X sent?' checks."""
        if self.body is None:
            return ""
        parts: list[str] = []
        _collect_text(self.body.get("system"), parts)
        _collect_text(self.body.get("messages"), parts)
        return "\n".join(parts)


def _collect_text(value: Any, parts: list[str]) -> None:
    if isinstance(value, str):
        parts.append(value)
    elif isinstance(value, list):
        for item in value:
            _collect_text(item, parts)
    elif isinstance(value, dict):
        for key in ("text", "content"):
            _collect_text(value.get(key), parts)


RequestMatch = Callable[[RecordedRequest], bool]
"""Whether a session's first main request belongs to a route."""


def mentions(text: str) -> RequestMatch:
    """Matches a request whose messages or system prompt contain ``text`` (``RecordedRequest.text``)."""
    return lambda request: text in request.text


@dataclass
class _Route:
    name: str
    matches: RequestMatch
    script: deque[Scripted]


def is_main_conversation(method: str, path: str, body: JSONBody) -> bool:
    """A messages request with tools or a large output budget is a turn of the conversation.

    Streaming or not: after a failed stream (e.g. a 404), 2.1.332 repeats the turn non-streaming.
    """
    if method != "POST" or path != "/v1/messages" or body is None:
        return False
    max_tokens = body.get("max_tokens")
    return bool(body.get("tools")) or not (isinstance(max_tokens, int) and max_tokens < _SIDE_CALL_MAX_TOKENS)


class ScriptedMessagesAPI:
    """The stand-in: a ThreadingHTTPServer on 127.0.0.1 in a background thread. Use as a context manager."""

    def __init__(self, replies: Iterable[Scripted] = ()) -> None:
        self._script: deque[Scripted] = deque(replies)
        self._routes: dict[str, _Route] = {}
        self._sessions: dict[str, _Route] = {}
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._ids = itertools.count(1)
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-api", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def main_requests(self) -> list[RecordedRequest]:
        return [request for request in self.requests if request.kind == "main"]

    def requests_of(self, route: str) -> list[RecordedRequest]:
        """The main requests a route answered, in arrival order."""
        return [request for request in self.requests if request.route == route]

    @property
    def remaining(self) -> int:
        """Scripted replies not yet taken, in the default script and every route's."""
        with self._lock:
            return len(self._script) + sum(len(route.script) for route in self._routes.values())

    def add(self, *replies: Scripted) -> None:
        """Append replies to the default script (safe while the CLI runs)."""
        with self._lock:
            self._script.extend(replies)

    def route(self, name: str, first_request: RequestMatch, *replies: Scripted) -> None:
        """Give the sessions whose first main request matches ``first_request`` a script of their own.

        Routes are tried in the order they were added; a session stays on the route that claimed it
        (by its ``x-claude-code-session-id``), and sessions one route claims share its script. Adding
        to an existing route appends to its script.
        """
        with self._lock:
            existing = self._routes.get(name)
            if existing is None:
                self._routes[name] = _Route(name, first_request, deque(replies))
            else:
                existing.script.extend(replies)

    def __enter__(self) -> ScriptedMessagesAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # Called from handler threads.

    def _take(self, method: str, url: str, headers: dict[str, str], body: JSONBody) -> Scripted | None:
        parts = urlsplit(url)
        kind: RequestKind = "main" if is_main_conversation(method, parts.path, body) else "side"
        query = dict(parse_qsl(parts.query))
        request = RecordedRequest(method, parts.path, query, headers, body, kind, None, received_at=time.time())
        with self._lock:
            route = self._route_of(request) if kind == "main" else None
            script = route.script if route is not None else self._script
            answer = script.popleft() if kind == "main" and script else None
            if kind == "main" and answer is None:
                answer = Failure(400, "invalid_request_error", "the scripted API has no reply left")
            self._requests.append(dataclasses.replace(request, answer=answer, route=route.name if route else None))
        return answer

    def _route_of(self, request: RecordedRequest) -> _Route | None:
        """The route of the request's session: the one that claimed it, else the first that matches (lock held)."""
        session = request.session_id
        if session is not None and session in self._sessions:
            return self._sessions[session]
        route = next((route for route in self._routes.values() if route.matches(request)), None)
        if route is not None and session is not None:
            self._sessions[session] = route
        return route

    def _wait_or_close(self, seconds: float) -> bool:
        """Wait ``seconds``; True when the stand-in started closing meanwhile."""
        return self._closing.wait(seconds)

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}_scripted_{next(self._ids):06d}"

    def _wait_for_close(self) -> None:
        self._closing.wait()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, api: ScriptedMessagesAPI) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def api(self) -> ScriptedMessagesAPI:
        assert isinstance(self.server, _Server)
        return self.server.api

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests are recorded, not logged."""

    def _dispatch(self) -> None:
        method = self.command
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = _parse_body(raw)
        headers = {name.lower(): value for name, value in self.headers.items()}
        answer = self.api._take(method, self.path, headers, body)
        path = urlsplit(self.path).path
        try:
            if answer is None:
                self._answer_side(method, path, body)
            elif isinstance(answer, Hang):
                self.api._wait_for_close()
                self.close_connection = True
            elif isinstance(answer, Failure):
                error = {"type": "error", "error": {"type": answer.error_type, "message": answer.message}}
                self._send_json(answer.status, error)
            elif answer.delay > 0 and self.api._wait_or_close(answer.delay):
                self.close_connection = True
            else:
                self._send_reply(answer, body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. its session was killed during a delayed reply): nobody to answer.
            self.close_connection = True

    # Without CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC, 2.1.332 sends ``HEAD /api/hello`` first.
    do_GET = do_HEAD = do_POST = _dispatch  # noqa: N815 - names http.server looks up

    def _answer_side(self, method: str, path: str, body: JSONBody) -> None:
        if method == "POST" and path == "/v1/messages/count_tokens":
            self._send_json(200, {"input_tokens": 1})
        elif method == "POST" and path == "/v1/messages":
            self._send_reply(Reply.text("ok", Usage(1, 1)), body)
        elif path == "/api/hello":
            self._send_json(200, {})
        else:
            self._send_json(404, {"type": "error", "error": {"type": "not_found_error", "message": path}})

    def _send_json(self, status: int, payload: Mapping[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _message(self, reply: Reply, model: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.api._next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": reply.effective_stop_reason if content else None,
            "stop_sequence": None,
            "usage": reply.usage.as_api(),
        }

    def _send_reply(self, reply: Reply, body: JSONBody) -> None:
        model = _model_of(body)
        content = [
            {"type": "text", "text": block.text}
            if isinstance(block, Text)
            else {"type": "tool_use", "id": block.id or self.api._next_id("toolu"), "name": block.name}
            | {"input": dict(block.input)}
            for block in reply.blocks
        ]
        if body is not None and body.get("stream") is False:
            self._send_json(200, self._message(reply, model, content))
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        opening = self._message(reply, model, [])
        opening["usage"] = reply.usage.as_api(output_tokens=1)
        self._event("message_start", message=opening)
        for index, block in enumerate(content):
            if block["type"] == "text":
                start: dict[str, Any] = {"type": "text", "text": ""}
                delta: dict[str, Any] = {"type": "text_delta", "text": block["text"]}
            else:
                start = {**block, "input": {}}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            self._event("content_block_start", index=index, content_block=start)
            self._event("content_block_delta", index=index, delta=delta)
            self._event("content_block_stop", index=index)
        stop = {"stop_reason": reply.effective_stop_reason, "stop_sequence": None}
        self._event("message_delta", delta=stop, usage=reply.usage.as_api())
        self._event("message_stop")
        self.wfile.flush()

    def _event(self, name: str, **fields: Any) -> None:
        data = json.dumps({"type": name, **fields})
        self.wfile.write(f"event: {name}\ndata: {data}\n\n".encode())


def _parse_body(raw: bytes) -> JSONBody:
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _model_of(body: JSONBody) -> str:
    model = body.get("model") if body is not None else None
    return model if isinstance(model, str) else "claude-sonnet-4-5"


@contextmanager
def scripted_messages_api(*replies: Scripted) -> Generator[ScriptedMessagesAPI]:
    """Run the stand-in for the ``with`` block; it yields the API (``base_url``, ``requests``, ``add``)."""
    with ScriptedMessagesAPI(replies) as api:
        yield api


def offline_cli_env(base_url: str, config_dir: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment that runs Claude Code against the stand-in, isolated from the user's ~/.claude.

    ``base`` (default: nothing) is copied first; variables that would leak a real account, a parent
    session or a proxy are dropped. PATH and HOME are kept from ``base`` when given.
    """
    env = {key: value for key, value in (base or {}).items() if not key.upper().startswith(_DROPPED_ENV_PREFIXES)}
    env.update(
        {
            "ANTHROPIC_BASE_URL": base_url,
            "ANTHROPIC_API_KEY": "test",
            "CLAUDE_CONFIG_DIR": str(config_dir),
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    return env
