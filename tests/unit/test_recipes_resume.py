"""Which recorded executions a rerun replays: pure rules, no process."""

from __future__ import annotations

from expeditor.recipes import parse_recipe
from expeditor.recipes.resume import plan_replay
from expeditor.state import StepExecution, StepStatus

RECIPE = parse_recipe(
    """\
name: loop
description: build, test with a fix loop, deploy
orchestrator: pipeline
steps:
  build: {skill: /build, capture: [artifact]}
  test: {skill: /test, on_success: deploy, on_failure: fix}
  fix: {skill: /fix, on_success: test}
  deploy: {skill: /deploy}
""",
    source="loop.yaml",
)


def executions(*shape: tuple[str, StepStatus]) -> list[StepExecution]:
    return [
        StepExecution(campaign_id="c", job_name="j", sequence=number, step=step, status=status)
        for number, (step, status) in enumerate(shape, start=1)
    ]


def test_a_fix_loop_replays_as_it_happened_and_resumes_at_the_unfinished_execution() -> None:
    recorded = executions(
        ("build", StepStatus.SUCCESS),
        ("test", StepStatus.FAILURE),
        ("fix", StepStatus.SUCCESS),
        ("test", StepStatus.SUCCESS),
        ("deploy", StepStatus.RUNNING),
    )
    replay = plan_replay(RECIPE, recorded)
    assert [e.step for e in replay.executions] == ["build", "test", "fix", "test"]
    assert replay.visits == {"build": 1, "test": 2, "fix": 1}
    assert replay.next_step == "deploy"
    assert replay.diverged is None


def test_a_failure_that_ended_the_run_is_run_again() -> None:
    recorded = executions(("build", StepStatus.SUCCESS), ("test", StepStatus.SUCCESS), ("deploy", StepStatus.FAILURE))
    replay = plan_replay(RECIPE, recorded)
    assert replay.next_step == "deploy"
    assert len(replay.executions) == 2


def test_records_of_a_step_the_recipe_no_longer_goes_to_stop_the_replay_there() -> None:
    recorded = executions(("build", StepStatus.SUCCESS), ("lint", StepStatus.SUCCESS))
    replay = plan_replay(RECIPE, recorded)
    assert replay.next_step == "test"
    assert replay.diverged is not None
    assert replay.diverged.step == "lint"
