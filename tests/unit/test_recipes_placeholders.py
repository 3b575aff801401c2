"""Placeholders: filled from inputs and captures without a shell; a missing name is an error."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from expeditor.recipes import RecipeError, placeholder_names, substitute, substitute_argv

HOSTILE = "; rm -rf / $(x) `y` && echo 'q' \"z\" | cat > /tmp/owned *"


def test_shell_metacharacters_in_a_value_stay_one_literal_argument() -> None:
    argv = substitute_argv(
        ["git", "commit", "-m", "{message}", "--author={author}"], {"message": HOSTILE, "author": "A B"}
    )
    assert argv == ["git", "commit", "-m", HOSTILE, "--author=A B"]


def test_shell_metacharacters_in_a_value_appear_literally_in_a_skill_command() -> None:
    assert substitute("/make-plan {work_dir} {task}", {"work_dir": "w", "task": HOSTILE}) == f"/make-plan w {HOSTILE}"


def test_a_value_that_looks_like_a_placeholder_is_not_substituted_again() -> None:
    assert substitute("{a}", {"a": "{b}", "b": "no"}) == "{b}"


def test_a_missing_name_is_an_error_naming_it_and_the_closest_known_name() -> None:
    with pytest.raises(
        RecipeError, match=r"placeholder \{topik\} in step 'plan' .* has no value; did you mean \{topic\}"
    ):
        substitute("/plan {topik}", {"topic": "x"}, where="step 'plan'")


def test_json_braces_and_double_braces_are_literal() -> None:
    template = '/demo {"events": [{"type": "result"}], "topic": "{topic}"} {{topic}'
    assert substitute(template, {"topic": "t"}) == '/demo {"events": [{"type": "result"}], "topic": "t"} {topic}'
    assert placeholder_names(template) == ["topic"]


def test_kept_names_stay_placeholders_for_a_later_pass() -> None:
    assert substitute("/fix {work_dir} {verdict} {{x}", {"work_dir": "w"}, keep={"verdict"}) == "/fix w {verdict} {{x}"


def test_placeholder_names_are_listed_once_in_order_of_first_use() -> None:
    assert placeholder_names("{b} {a} {b} { c } {1x} {_ok}") == ["b", "a", "_ok"]


NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True)
PIECES = st.one_of(
    st.text(max_size=6),
    NAMES.map(lambda name: "{" + name + "}"),
    st.sampled_from(["{", "}", "{{", "}}", "{ x }", "{1}"]),
)
TEMPLATES = st.lists(PIECES, max_size=8).map("".join)
VALUES = st.dictionaries(NAMES, st.text(max_size=8), max_size=4)


@given(TEMPLATES, VALUES)
def test_substitution_raises_only_recipe_errors_and_never_blanks_a_missing_name(
    template: str, values: dict[str, str]
) -> None:
    missing = [name for name in placeholder_names(template) if name not in values]
    if missing:
        with pytest.raises(RecipeError, match=re.escape(f"placeholder {{{missing[0]}}}")):
            substitute(template, values)
    else:
        result = substitute(template, values)
        for name in placeholder_names(template):
            assert values[name] in result


@given(st.lists(TEMPLATES, max_size=4), VALUES)
def test_argv_substitution_keeps_one_argument_per_item(argv: list[str], values: dict[str, str]) -> None:
    try:
        result = substitute_argv(argv, values)
    except RecipeError:
        return
    assert len(result) == len(argv)
    assert result == [substitute(item, values) for item in argv]
