"""Captures: values a step reports as key=value lines or in a JSON block."""

from __future__ import annotations

from expeditor.recipes import extract_captures


def test_key_value_lines_are_captured_with_bullets_backticks_and_bold_tolerated() -> None:
    text = "All done.\n\n- **tests**=passed\n`verdict = approve`\nsummary=two files changed, a=b kept\n"
    assert extract_captures(text, ["tests", "verdict", "summary"]) == {
        "tests": "passed",
        "verdict": "approve",
        "summary": "two files changed, a=b kept",
    }


def test_a_fenced_json_block_is_captured_with_non_strings_kept_as_json() -> None:
    block = '{"root_cause": "stale cache", "confidence": "high", "files": ["a.py"], "n": 3}'
    text = f"Report:\n\n```json\n{block}\n```\n"
    assert extract_captures(text, ["root_cause", "confidence", "files", "n"]) == {
        "root_cause": "stale cache",
        "confidence": "high",
        "files": '["a.py"]',
        "n": "3",
    }


def test_a_result_that_is_one_json_object_is_captured() -> None:
    assert extract_captures('{"status": "ok", "flag": true}', ["status", "flag"]) == {
        "status": "ok",
        "flag": "true",
    }


def test_only_declared_names_are_taken_and_missing_ones_are_absent() -> None:
    assert extract_captures("tests=passed\nother=1\n", ["tests", "verdict"]) == {"tests": "passed"}


def test_the_last_report_of_a_name_wins_whatever_its_form() -> None:
    text = 'verdict=changes\n```\n{"verdict": "approve"}\n```\nverdict=final\n'
    assert extract_captures(text, ["verdict"]) == {"verdict": "final"}
    assert extract_captures(text.rsplit("verdict=final", 1)[0], ["verdict"]) == {"verdict": "approve"}


def test_malformed_json_and_other_fenced_languages_are_ignored() -> None:
    text = '```json\n{"verdict": \n```\n```python\nx = {"verdict": "no"}\n```\n'
    assert extract_captures(text, ["verdict"]) == {}


def test_nothing_is_captured_when_no_name_is_declared() -> None:
    assert extract_captures("tests=passed", []) == {}
