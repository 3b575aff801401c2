"""The stream-json parser survives anything on stdout and takes usage only from the result event."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from expeditor.claude_paths import transcript_path
from expeditor.executor.stream import ResultFacts, StreamState
from expeditor.usage.models import UsageSource
from expeditor.usage.stream_json import LineSplitter, decode_event
from expeditor.usage.transcript import usage_from_transcript

USAGE = {
    "input_tokens": 11,
    "output_tokens": 7,
    "cache_read_input_tokens": 1000,
    "cache_creation_input_tokens": 200,
}
OPENING_USAGE = {**USAGE, "output_tokens": 1}


def assistant(message_id: str, block: dict[str, Any], usage: dict[str, int]) -> dict[str, Any]:
    return {
        "type": "assistant",
        "message": {"id": message_id, "model": "claude-sonnet-4-5", "content": [block], "usage": usage},
        "session_id": "s",
    }


RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "num_turns": 2,
    "result": "all done",
    "session_id": "s",
    "total_cost_usd": 0.0123,
    "duration_ms": 1500,
    "usage": {
        "input_tokens": 22,
        "output_tokens": 14,
        "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 400,
    },
    "modelUsage": {
        "claude-sonnet-4-5": {
            "inputTokens": 22,
            "outputTokens": 14,
            "cacheReadInputTokens": 2000,
            "cacheCreationInputTokens": 400,
            "costUSD": 0.0123,
        }
    },
}


def two_block_session() -> list[dict[str, Any]]:
    return [
        {"type": "system", "subtype": "init", "session_id": "s", "model": "claude-sonnet-4-5"},
        assistant("msg_1", {"type": "text", "text": "looking"}, OPENING_USAGE),
        assistant("msg_1", {"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}, OPENING_USAGE),
        {"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t1"}]}},
        assistant("msg_2", {"type": "text", "text": "all done"}, OPENING_USAGE),
        RESULT,
    ]


def feed_all(events: list[dict[str, Any]], chunk: int) -> StreamState:
    data = b"".join(json.dumps(event).encode() + b"\n" for event in events)
    splitter = LineSplitter()
    state = StreamState()
    for start in range(0, len(data), chunk):
        for line in splitter.feed(data[start : start + chunk]):
            if (event := decode_event(line)) is not None:
                state.handle(event)
    return state


def test_a_two_block_reply_is_not_double_counted() -> None:
    state = feed_all(two_block_session(), chunk=7)
    assert state.result is not None
    total = state.result.usage.total
    assert (total.input_tokens, total.output_tokens) == (22, 14)
    assert (total.cache_read_tokens, total.cache_write_tokens) == (2000, 400)
    assert total.turns == 2
    assert total.cost_usd == 0.0123
    assert state.result.usage.source is UsageSource.RESULT_EVENT
    assert state.result.usage.by_model["claude-sonnet-4-5"].output_tokens == 14


def test_peak_context_counts_each_message_once() -> None:
    state = feed_all(two_block_session(), chunk=4096)
    assert state.result is not None
    assert state.result.usage.total.peak_context == 11 + 1000 + 200


def test_init_and_result_facts_are_read() -> None:
    state = feed_all(two_block_session(), chunk=1)
    assert state.init_session_id == "s"
    assert state.result is not None
    assert state.result.text == "all done"
    assert not state.result.is_error
    assert state.last_assistant_text == "all done"


def test_a_line_split_across_many_chunks_is_reassembled() -> None:
    line = json.dumps(RESULT).encode()
    splitter = LineSplitter()
    pieces = [splitter.feed(line[i : i + 3]) for i in range(0, len(line), 3)]
    assert all(piece == [] for piece in pieces)
    assert splitter.feed(b"\n") == [line]


def test_a_multi_megabyte_line_is_parsed() -> None:
    big = {**RESULT, "result": "x" * (5 * 1024 * 1024)}
    state = feed_all([big], chunk=65536)
    assert state.result is not None
    assert len(state.result.text) == 5 * 1024 * 1024


def test_a_line_over_the_limit_is_dropped_and_the_stream_resynchronises() -> None:
    splitter = LineSplitter(max_line_bytes=100)
    lines = splitter.feed(b"a" * 250 + b"\n" + b'{"type":"x"}\n')
    assert lines == [b'{"type":"x"}']
    assert splitter.dropped_lines == 1


def test_garbage_and_unknown_events_are_ignored() -> None:
    state = StreamState()
    for line in [b"not json", b"{broken", b"[1,2]", b'{"no_type":1}', b'{"type":"brand_new","x":1}', b""]:
        if (event := decode_event(line)) is not None:
            state.handle(event)
    assert state.result is None
    assert state.events == 1


def test_a_result_with_wrong_types_gives_zeroes_not_errors() -> None:
    state = StreamState()
    state.handle({"type": "result", "usage": {"input_tokens": "many", "output_tokens": -5}, "num_turns": None})
    assert state.result is not None
    assert state.result.usage.total.input_tokens == 0
    assert state.result.usage.total.output_tokens == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    splitter = LineSplitter(max_line_bytes=200)
    state = StreamState()
    for chunk in chunks:
        for line in splitter.feed(chunk):
            if (event := decode_event(line)) is not None:
                state.handle(event)
    for line in splitter.flush():
        if (event := decode_event(line)) is not None:
            state.handle(event)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["system", "assistant", "user", "result"]),
    st.dictionaries(
        st.sampled_from(["message", "usage", "modelUsage", "result", "subtype", "num_turns", "session_id"]),
        JSON_VALUES,
    ),
)
def test_events_with_arbitrary_shapes_never_raise(kind: str, fields: dict[str, Any]) -> None:
    state = StreamState()
    state.handle({"type": kind, **fields})
    if kind == "result":
        assert state.result is not None


def test_the_transcript_path_replaces_every_non_alphanumeric_character(tmp_path: Path) -> None:
    path = transcript_path(tmp_path, Path("/home/me/my project_v1.2"), "abc")
    assert path == tmp_path / "projects" / "-home-me-my-project-v1-2" / "abc.jsonl"


def write_transcript(path: Path, events: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as stream:
        for event in events:
            stream.write(json.dumps(event) + "\n")


def test_transcript_usage_deduplicates_by_message_id(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_transcript(
        path,
        [
            {"type": "user", "message": {"content": "hi"}},
            assistant("msg_1", {"type": "text", "text": "a"}, USAGE),
            assistant("msg_1", {"type": "tool_use", "name": "Bash"}, USAGE),
            assistant("msg_2", {"type": "text", "text": "b"}, USAGE),
        ],
    )
    usage = usage_from_transcript(path)
    assert usage.partial
    assert usage.source is UsageSource.TRANSCRIPT
    assert (usage.total.input_tokens, usage.total.output_tokens) == (22, 14)
    assert (usage.total.cache_read_tokens, usage.total.cache_write_tokens) == (2000, 400)
    assert usage.total.turns == 2
    assert usage.total.peak_context == 1211


def test_transcript_usage_before_the_launch_offset_is_not_counted_again(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_transcript(path, [assistant("msg_old", {"type": "text", "text": "a"}, USAGE)])
    offset = path.stat().st_size
    write_transcript(path, [assistant("msg_new", {"type": "text", "text": "b"}, USAGE), "not an event"])
    usage = usage_from_transcript(path, offset)
    assert usage.total.input_tokens == 11
    assert usage.total.turns == 1


def test_a_missing_transcript_gives_empty_usage(tmp_path: Path) -> None:
    usage = usage_from_transcript(tmp_path / "nothing.jsonl")
    assert usage.source is UsageSource.NONE
    assert usage.total.input_tokens == 0


def test_the_result_keeps_errors_and_permission_denials() -> None:
    state = StreamState()
    state.handle(
        {
            "type": "result",
            "subtype": "error_during_execution",
            "is_error": True,
            "errors": ["No conversation found with session ID: abc", 3],
            "permission_denials": [{"tool_name": "mcp__expeditor__run_skill", "tool_use_id": "t"}, "junk"],
        }
    )
    assert state.result is not None
    assert state.result.errors == ("No conversation found with session ID: abc",)
    assert state.result.permission_denials == ("mcp__expeditor__run_skill",)


def parse_lines(data: bytes) -> StreamState:
    """``data`` through the parser the runner uses: split into lines, decoded, handled."""
    splitter = LineSplitter()
    state = StreamState()
    for line in [*splitter.feed(data), *splitter.flush()]:
        if (event := decode_event(line)) is not None:
            state.handle(event)
    return state


def as_utf8_json(facts: ResultFacts) -> bytes:
    """What storing or returning the facts needs: JSON text (non-ASCII kept) that encodes as UTF-8."""
    fields = dataclasses.asdict(facts)
    return json.dumps(fields, ensure_ascii=False, default=lambda usage: usage.model_dump(mode="json")).encode()


def test_a_lone_surrogate_in_a_result_is_kept_as_a_replacement_character() -> None:
    # A JavaScript string cut mid-pair serialises as a lone \ud800 escape: valid JSON, unencodable text.
    line = (
        rb'{"type":"result","subtype":"success","is_error":false,"result":"cut \ud800 here",'
        rb'"errors":["no \udfff"],"permission_denials":[{"tool_name":"Bash\ud83d"}],'
        rb'"modelUsage":{"model\udc00":{"inputTokens":3}}}'
    )
    state = parse_lines(line + b"\n")
    assert state.result is not None
    assert state.result.text == "cut \ufffd here"
    assert state.result.errors == ("no \ufffd",)
    assert state.result.permission_denials == ("Bash\ufffd",)
    assert list(state.result.usage.by_model) == ["model\ufffd"]
    assert state.result.usage.by_model["model\ufffd"].input_tokens == 3
    json.loads(as_utf8_json(state.result))


def test_an_invalid_utf8_byte_does_not_drop_the_result_event() -> None:
    state = parse_lines(b'{"type":"result","subtype":"success","result":"before \xff after"}\n')
    assert state.result is not None
    assert state.result.text == "before \ufffd after"
    assert not state.result.is_error


def test_a_valid_surrogate_pair_is_one_character_and_is_kept() -> None:
    state = parse_lines(b'{"type":"result","result":"\\ud83d\\ude00 \xc3\xa9"}\n')
    assert state.result is not None
    assert state.result.text == "\U0001f600 \u00e9"


ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=12)  # surrogates included


@settings(max_examples=400, deadline=None)
@given(
    texts=st.fixed_dictionaries(
        {
            "result": ANY_TEXT,
            "session_id": ANY_TEXT,
            "subtype": ANY_TEXT,
            "model": ANY_TEXT,
            "assistant_text": ANY_TEXT,
        }
    ),
    errors=st.lists(ANY_TEXT, max_size=3),
    tools=st.lists(ANY_TEXT, max_size=3),
    raw_bytes=st.binary(max_size=12).map(lambda data: bytes(byte | 0x80 for byte in data)),
)
def test_every_result_the_parser_returns_serialises_as_utf8_json(
    texts: dict[str, str], errors: list[str], tools: list[str], raw_bytes: bytes
) -> None:
    init = {"type": "system", "subtype": "init", "session_id": texts["session_id"], "model": texts["model"]}
    reply = assistant("msg_1", {"type": "text", "text": texts["assistant_text"]}, USAGE)
    reply["message"]["model"] = texts["model"]
    result = {
        "result": texts["result"],  # first, so the bytes below land inside its string
        "type": "result",
        "subtype": texts["subtype"],
        "session_id": texts["session_id"],
        "errors": errors,
        "permission_denials": [{"tool_name": tool} for tool in tools],
        "modelUsage": {texts["model"]: {"inputTokens": 1}},
    }
    # json.dumps escapes a lone surrogate as \udXXX, as Claude Code's stream does; bytes of 0x80
    # and above are never JSON syntax, so the line stays an event however they decode.
    result_line = json.dumps(result).encode()
    opening = b'{"result": "'
    assert result_line.startswith(opening)
    result_line = opening + raw_bytes + result_line[len(opening) :]
    data = json.dumps(init).encode() + b"\n" + json.dumps(reply).encode() + b"\n" + result_line + b"\n"
    state = parse_lines(data)
    assert state.result is not None
    as_utf8_json(state.result)
    assert state.result.usage.model_dump_json()
    assert len(state.result.errors) == len(errors)
    for kept in (state.init_session_id or "", state.model or "", state.last_assistant_text):
        kept.encode()
