"""The pipeline runner driving the real Claude Code CLI (scripted Messages API): captures flow, usage adds up."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from expeditor.config import Settings
from expeditor.recipes import parse_recipe
from expeditor.recipes.pipeline import PipelineJob, PipelineRunner
from expeditor.reports.aggregate import campaign_report
from expeditor.reports.render import render_markdown
from expeditor.runs import build_executor
from expeditor.runs.supervisor import Supervisor
from expeditor.state import SqliteCampaignStore, StepStatus
from tests.support.scripted_messages_api import Reply, ScriptedMessagesAPI, Usage

pytestmark = [pytest.mark.anyio, pytest.mark.real_claude]

RECIPE = """\
name: two-steps
description: plan, then build what the plan said
orchestrator: pipeline
inputs:
  topic: {default: a tiny web service}
steps:
  plan:
    skill: Write a one-line plan for {topic}; report it as plan=...
    capture: [plan]
  build:
    skill: Build exactly this - {plan}
    model: haiku
    stale_threshold: 30
"""


async def test_a_pipeline_of_real_sessions_passes_captures_and_reports_their_usage(
    settings: Settings,
    claude_env: dict[str, str],
    scripted_api: ScriptedMessagesAPI,
    tmp_path: Path,
) -> None:
    scripted_api.add(
        Reply.text("plan=REST API with /health; $(rm -rf /) stays text", Usage(10, 5, 100, 20)),
        Reply.text("Built it.", Usage(30, 9, 400, 0)),
    )
    recipe = parse_recipe(RECIPE, source="two-steps.yaml")
    store = SqliteCampaignStore(settings.state_path)
    try:
        supervisor = Supervisor(settings, build_executor(settings, env=claude_env), store=store)
        job = PipelineJob(recipe, recipe.resolve_inputs({}), "c", "j", tmp_path, str(uuid.uuid4()))
        outcome = await PipelineRunner(settings, store, supervisor, job).run()
        assert outcome.status == "success", outcome.reason
        assert outcome.captures == {"plan": "REST API with /health; $(rm -rf /) stays text"}
        build_request = scripted_api.main_requests[-1]
        assert "Build exactly this - REST API with /health; $(rm -rf /) stays text" in build_request.text
        assert build_request.body["model"].startswith("claude-haiku")
        assert [e.status for e in store.list_steps("c", "j")] == [StepStatus.SUCCESS, StepStatus.SUCCESS]

        report = campaign_report(store, "c")
        plan, build = report.steps
        assert (plan.usage.input_tokens, plan.usage.output_tokens) == (10, 5)
        assert (build.usage.input_tokens, build.usage.cache_read_tokens) == (30, 400)
        # The scripted API is not Anthropic's: the report says so.
        assert plan.non_anthropic
        assert "*" in render_markdown(report)
    finally:
        store.close()
