"""Recipe validation: every problem at once, each naming file, line, step and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from expeditor.recipes import RecipeError, RecipeLibrary, parse_recipe, recipe_file_problems, recipe_problems

HEADER = """\
name: sample
description: A recipe to break.
inputs:
  topic: {description: What to work on.}
steps:
"""
"""Five lines: the steps below start on line 6."""

SOURCE = "recipes/sample.yaml"


def problems_of(steps: str, *, header: str = HEADER) -> list[str]:
    text = header + textwrap.indent(textwrap.dedent(steps), "  ")
    return [str(problem) for problem in recipe_problems(text, source=SOURCE, expected_name="sample")]


def test_every_bundled_recipe_validates() -> None:
    library = RecipeLibrary()
    names = [entry.name for entry in library.entries()]
    assert names == ["demo", "diagnose", "implementation"]
    for name in names:
        assert library.load(name).name == name


def test_a_valid_recipe_has_no_problems() -> None:
    assert problems_of("plan:\n  skill: /plan {topic}\n") == []


BROKEN: list[tuple[str, str, str]] = [
    (
        "unknown step key, closest key suggested",
        """\
        plan:
          skill: /plan {topic}
          stal_threshold: 30
        """,
        "recipes/sample.yaml:8: step 'plan', field 'stal_threshold': unknown key 'stal_threshold'; "
        "did you mean 'stale_threshold'?",
    ),
    (
        "unreachable step",
        """\
        plan:
          skill: /plan {topic}
          on_success: stop
        orphan:
          skill: /orphan
        """,
        "recipes/sample.yaml:9: step 'orphan': is never reached from the first step 'plan'",
    ),
    (
        "route to a missing step",
        """\
        plan:
          skill: /plan {topic}
          on_failure: fxi
        fix:
          skill: /fix
        """,
        "recipes/sample.yaml:8: step 'plan', field 'on_failure': routes to 'fxi', which is not a step; "
        "expected one of plan, fix, 'stop' or 'fail'; did you mean 'fix'?",
    ),
    (
        "cycle without an exit",
        """\
        plan:
          skill: /plan {topic}
        check:
          skill: /check
          on_success: plan
        done:
          skill: /done
          on_failure: stop
        """,
        "recipes/sample.yaml:6: step 'plan': steps 'plan', 'check' route to one another with no way out but 'fail'",
    ),
    (
        "step that routes back to itself forever",
        """\
        poll:
          skill: /poll {topic}
          on_success: poll
        """,
        "recipes/sample.yaml:6: step 'poll': routes back to itself with no way out but 'fail'",
    ),
    (
        "placeholder never defined",
        """\
        plan:
          skill: /plan {topik}
        """,
        "recipes/sample.yaml:7: step 'plan', field 'skill': placeholder {topik} names no input and no "
        "capture; expected one of: {topic}; did you mean {topic}?",
    ),
    (
        "placeholder in a run argv never defined",
        """\
        build:
          run: [make, "{target}"]
        """,
        "recipes/sample.yaml:7: step 'build', field 'run[1]': placeholder {target} names no input",
    ),
    (
        "placeholder captured only by a later step",
        """\
        plan:
          skill: /plan {verdict}
        review:
          skill: /review
          capture: [verdict]
        """,
        "recipes/sample.yaml:7: step 'plan', field 'skill': placeholder {verdict} is captured only by "
        "step 'review', which never runs before this step",
    ),
    (
        "stale threshold of zero",
        """\
        plan:
          skill: /plan
          stale_threshold: 0
        """,
        "recipes/sample.yaml:8: step 'plan', field 'stale_threshold': expected a number of seconds "
        "greater than 0, got 0",
    ),
    (
        "negative timeout",
        """\
        plan:
          skill: /plan
          timeout: -5
        """,
        "recipes/sample.yaml:8: step 'plan', field 'timeout': expected a number of seconds greater than 0, got -5",
    ),
    (
        "threshold that is not a number",
        """\
        plan:
          skill: /plan
          stale_threshold: 40m
        """,
        "recipes/sample.yaml:8: step 'plan', field 'stale_threshold': expected a number of seconds, got '40m'",
    ),
    (
        "both skill and run",
        """\
        plan:
          skill: /plan
          run: [make]
        """,
        "recipes/sample.yaml:6: step 'plan': has both of 'skill' and 'run'; expected exactly one of them",
    ),
    (
        "neither skill nor run",
        """\
        plan:
          model: opus
        """,
        "recipes/sample.yaml:6: step 'plan': has neither of 'skill' and 'run'; expected exactly one of them",
    ),
    (
        "unknown model",
        """\
        plan:
          skill: /plan
          model: gpt-4
        """,
        "recipes/sample.yaml:8: step 'plan', field 'model': model 'gpt-4' is not known: expected one of "
        "sonnet, opus, haiku",
    ),
    (
        "run step under an agent orchestrator",
        """\
        build:
          run: [make]
        """,
        "recipes/sample.yaml:7: step 'build', field 'run': is a command, but an agent orchestrator runs "
        "steps only through run_skill",
    ),
    (
        "when reads an undeclared input",
        """\
        plan:
          skill: /plan
          when: {input: topc, equals: x}
        """,
        "recipes/sample.yaml:8: step 'plan', field 'when': reads input 'topc', but no input of that name is "
        "declared; expected one of: topic; did you mean 'topic'?",
    ),
    (
        "when reads a capture no step captures",
        """\
        plan:
          skill: /plan
          capture: [verdict]
        fix:
          skill: /fix
          when: {capture: verdit, equals: changes}
        """,
        "recipes/sample.yaml:11: step 'fix', field 'when': reads capture 'verdit', but no step captures it; "
        "expected one of: verdict; did you mean 'verdict'?",
    ),
    (
        "when with an unknown key",
        """\
        plan:
          skill: /plan
          when: {input: topic, equal: x}
        """,
        "recipes/sample.yaml:8: step 'plan', field 'when.equal': unknown key 'equal'; did you mean 'equals'?",
    ),
    (
        "when without a test",
        """\
        plan:
          skill: /plan
          when:
            not: {input: topic}
        """,
        "recipes/sample.yaml:9: step 'plan', field 'when.not': has no test for input 'topic'; "
        "expected 'equals' or 'in'",
    ),
    (
        "when comparing with an unquoted yes",
        """\
        plan:
          skill: /plan
          when: {input: topic, equals: yes}
        """,
        "recipes/sample.yaml:8: step 'plan', field 'when.equals': expected a string, got True; "
        "YAML reads yes/no/true/false/null as non-strings, so quote it",
    ),
    (
        "reserved step name",
        """\
        stop:
          skill: /plan
        """,
        "recipes/sample.yaml:6: step 'stop': is a reserved name ('stop' and 'fail' end a run)",
    ),
    (
        "step name that cannot be a file name",
        """\
        ../plan:
          skill: /plan
        """,
        "recipes/sample.yaml:6: step '../plan': step name '../plan' is not valid",
    ),
    (
        "capture named like an input",
        """\
        plan:
          skill: /plan
          capture: [topic]
        """,
        "recipes/sample.yaml:8: step 'plan', field 'capture[0]': 'topic' is also an input's name",
    ),
    (
        "negative retries",
        """\
        plan:
          skill: /plan
          retries: -1
        """,
        "recipes/sample.yaml:8: step 'plan', field 'retries': expected a number at least 0, got -1",
    ),
    (
        "duplicate step",
        """\
        plan:
          skill: /plan
        plan:
          skill: /plan again
        """,
        "recipes/sample.yaml:8: step 'plan': appears twice (first on line 6)",
    ),
]


@pytest.mark.parametrize(("steps", "expected"), [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN])
def test_a_broken_recipe_fails_with_a_message_naming_the_step_and_field(steps: str, expected: str) -> None:
    problems = problems_of(steps)
    assert any(problem.startswith(expected) for problem in problems), "\n".join(problems)


HEADER_CASES: list[tuple[str, str, str]] = [
    (
        "unknown top-level key",
        "name: sample\ndescripton: x\nsteps:\n  plan: {skill: /plan}\n",
        "recipes/sample.yaml:2: field 'descripton': unknown key 'descripton'; did you mean 'description'?",
    ),
    (
        "missing description",
        "name: sample\nsteps:\n  plan: {skill: /plan}\n",
        "recipes/sample.yaml:1: field 'description': is required",
    ),
    (
        "name that is not the file's",
        "name: other\ndescription: x\nsteps:\n  plan: {skill: /plan}\n",
        "recipes/sample.yaml:1: field 'name': is 'other' but the file is sample.yaml",
    ),
    (
        "orchestrator misspelt",
        "name: sample\ndescription: x\norchestrator: agnet\nsteps:\n  plan: {skill: /plan}\n",
        "recipes/sample.yaml:3: field 'orchestrator': expected 'agent' or 'pipeline', got 'agnet'",
    ),
    (
        "steps written as a list",
        "name: sample\ndescription: x\nsteps:\n  - plan: {skill: /plan}\n",
        "recipes/sample.yaml:3: field 'steps': expected a mapping of step names to steps, in order, got a list",
    ),
    (
        "no steps",
        "name: sample\ndescription: x\nsteps: {}\n",
        "recipes/sample.yaml:3: field 'steps': expected at least one step",
    ),
    (
        "required input with a default",
        "name: sample\ndescription: x\ninputs:\n  topic: {required: true, default: a}\nsteps:\n"
        "  plan: {skill: /plan}\n",
        "recipes/sample.yaml:4: input 'topic': has both 'required: true' and a default",
    ),
    (
        "input name that cannot be a placeholder",
        "name: sample\ndescription: x\ninputs:\n  work-dir: {default: a}\nsteps:\n  plan: {skill: /plan}\n",
        "recipes/sample.yaml:4: input 'work-dir': is not a valid input name",
    ),
    (
        "zero default threshold",
        "name: sample\ndescription: x\ndefaults:\n  stale_threshold: 0\nsteps:\n  plan: {skill: /plan}\n",
        "recipes/sample.yaml:4: defaults, field 'stale_threshold': expected a number of seconds greater than 0",
    ),
    (
        "YAML syntax error",
        "name: sample\ndescription: [x\nsteps: {}\n",
        "recipes/sample.yaml:3: recipe: is not valid YAML",
    ),
    (
        "not a mapping",
        "- plan\n",
        "recipes/sample.yaml:1: recipe: expected a mapping with name, description, steps",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [case[1:] for case in HEADER_CASES], ids=[case[0] for case in HEADER_CASES]
)
def test_a_broken_recipe_header_fails_with_a_message_naming_the_field(text: str, expected: str) -> None:
    problems = [str(problem) for problem in recipe_problems(text, source=SOURCE, expected_name="sample")]
    assert any(problem.startswith(expected) for problem in problems), "\n".join(problems)


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    problems = problems_of(
        """\
        plan:
          skill: /plan {topik}
          stal_threshold: 30
          on_success: buidl
        build:
          skill: /build
          model: gpt-4
          when: {capture: verdict, equals: ok}
        """
    )
    assert [problem.split(": ")[1] for problem in problems] == [
        "step 'plan', field 'skill'",
        "step 'plan', field 'stal_threshold'",
        "step 'plan', field 'on_success'",
        "step 'build', field 'model'",
        "step 'build', field 'when'",
    ]


def test_parse_recipe_raises_one_error_carrying_every_problem() -> None:
    text = HEADER + "  plan:\n    skill: /plan {nope}\n    timeout: 0\n"
    with pytest.raises(RecipeError) as caught:
        parse_recipe(text, source=SOURCE, expected_name="sample")
    assert len(caught.value.problems) == 2
    assert str(caught.value).startswith("recipes/sample.yaml: 2 problems\n  recipes/sample.yaml:7: step 'plan'")


def test_a_loop_with_a_way_out_is_accepted() -> None:
    assert (
        problems_of(
            """\
            test:
              skill: /test
              capture: [result]
            fix:
              skill: /fix
              when: {capture: result, equals: failed}
              max_visits: 3
              on_success: test
            """
        )
        == []
    )


def test_a_recipe_file_that_cannot_be_read_is_one_problem(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    [problem] = recipe_file_problems(missing)
    assert str(problem).startswith(f"{missing}: recipe: cannot be read")
