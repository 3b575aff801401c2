"""Every token is counted once: two-block replies, resumed sessions and crashed sessions, on recorded files.

The files are in tests/data/usage (see its generate.py); each test reads them through the same
parsers the executor uses when a session ends.
"""

from __future__ import annotations

import json

from tests.support.recorded_sessions import recorded_sessions

from expeditor.usage.models import TokenUsage, UsageSource
from expeditor.usage.transcript import usage_from_transcript

SESSIONS = recorded_sessions()


def figures(usage: TokenUsage) -> tuple[int, int, int, int]:
    return usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens


def test_a_two_block_reply_is_one_message_on_stdout_in_the_transcript_and_in_the_result() -> None:
    plan = SESSIONS["plan"]
    assistant_events = [
        event for event in map(json.loads, plan.stdout.read_text().splitlines()) if event["type"] == "assistant"
    ]
    # The trap: three stdout events for two messages, each with the opening output count of 1.
    assert len(assistant_events) == 3
    assert sum(event["message"]["usage"]["input_tokens"] for event in assistant_events) == 25
    usage = plan.usage()
    assert usage.source is UsageSource.RESULT_EVENT
    assert figures(usage.total) == (14, 827, 2320, 4712)
    assert (usage.total.turns, usage.total.peak_context) == (2, 3 + 1320 + 4512)
    from_transcript = usage_from_transcript(plan.transcript)
    assert figures(from_transcript.total) == figures(usage.total)
    assert from_transcript.total.turns == 2


def test_a_crashed_session_is_partial_with_each_message_from_its_transcript_once() -> None:
    crashed = SESSIONS["implement-1"]
    assert crashed.stream().result is None
    usage = crashed.usage()
    assert (usage.source, usage.partial) == (UsageSource.TRANSCRIPT, True)
    assert figures(usage.total) == (5 + 2, 950 + 1400, 48_000 + 60_000, 12_000 + 3000)
    assert usage.total.turns == 2


def test_a_resumed_session_that_completed_counts_only_its_own_launch() -> None:
    first, resumed = SESSIONS["implement-1"], SESSIONS["implement-2"]
    assert resumed.session_id == first.session_id
    assert resumed.transcript_offset > 0  # its transcript starts with the first launch's messages
    usage = resumed.usage()
    assert usage.source is UsageSource.RESULT_EVENT
    assert figures(usage.total) == (1893, 5250, 39_512_345, 984_950)
    assert usage.total.peak_context == 1 + 77_600 + 900  # from this launch's own messages


def test_a_resumed_session_that_crashed_counts_only_the_messages_after_its_start() -> None:
    resumed = SESSIONS["review-2"]
    whole_file = usage_from_transcript(resumed.transcript, 0)
    assert figures(whole_file.total) == (8 + 3, 512 + 487, 31_000 + 37_000, 6000 + 800)
    usage = resumed.usage()
    assert (usage.source, usage.partial) == (UsageSource.TRANSCRIPT, True)
    assert figures(usage.total) == (3, 487, 37_000, 800)


def test_a_made_up_reply_after_an_api_error_is_neither_a_turn_nor_a_model() -> None:
    usage = SESSIONS["review-2"].usage()
    assert "<synthetic>" in SESSIONS["review-2"].transcript.read_text()
    assert list(usage.by_model) == ["claude-sonnet-4-5"]
    assert usage.total.turns == 1
