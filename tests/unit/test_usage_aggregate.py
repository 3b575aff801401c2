"""Adding recorded runs up: rows per step and model, totals that count overlapping work once, the campaign join."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from expeditor.executor.models import SessionKind, Termination
from expeditor.reports.aggregate import build_report, campaign_report, campaign_runs, job_usage
from expeditor.state import Owner, RunRecord, RunStatus, SqliteCampaignStore
from expeditor.usage.models import SessionUsage, TokenUsage, UsageSource

T0 = 1_767_225_600.0
OWNER = Owner(pid=1, start_time=T0 - 60, host="builder")
SONNET = "claude-sonnet-4-5"


def tokens(inp: int = 0, out: int = 0, read: int = 0, write: int = 0, *, turns: int = 1, peak: int = 0) -> TokenUsage:
    return TokenUsage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=read,
        cache_write_tokens=write,
        turns=turns,
        peak_context=peak,
    )


def usage(*models: tuple[str, TokenUsage], source: UsageSource = UsageSource.RESULT_EVENT) -> SessionUsage:
    total = TokenUsage()
    for _, figures in models:
        total = total + figures
    return SessionUsage(total=total, by_model=dict(models), source=source, partial=source is UsageSource.TRANSCRIPT)


def run(
    run_id: str, label: str, start: float, seconds: float | None, figures: SessionUsage | None = None, **fields: Any
) -> RunRecord:
    values: dict[str, Any] = {
        "run_id": run_id,
        "kind": SessionKind.SKILL,
        "status": RunStatus.RUNNING if seconds is None else RunStatus.SUCCESS,
        "termination": None if seconds is None else Termination.COMPLETED,
        "campaign_id": "c",
        "label": label,
        "usage": figures if figures is not None else usage((SONNET, tokens(10, 10))),
        "owner": OWNER,
        "started_at": T0 + start,
        "finished_at": None if seconds is None else T0 + start + seconds,
        **fields,
    }
    return RunRecord.model_validate(values)


def test_one_row_per_step_in_order_of_first_start_with_retries_counted() -> None:
    runs = [
        run("r1", "implement", 10, 5, usage((SONNET, tokens(1, 2, 3, 4, peak=40)))),
        run("p1", "plan", 0, 5),
        run("r2", "implement", 100, 7, usage((SONNET, tokens(10, 20, 30, 40, turns=3, peak=90)))),
        run("v1", "review", 50, 1),
    ]
    report = build_report(runs)
    assert [(row.step, row.sessions) for row in report.steps] == [("plan", 1), ("implement", 2), ("review", 1)]
    implement = report.steps[1]
    assert implement.usage == tokens(11, 22, 33, 44, turns=4, peak=90)
    assert implement.seconds == 12
    assert implement.started_at == T0 + 10


def test_the_total_sums_tokens_keeps_the_largest_peak_and_counts_overlapping_time_once() -> None:
    runs = [
        run("orch", "orchestrator", 0, 100, usage((SONNET, tokens(1, 1, 1, 1, peak=500)))),
        run("skill", "/make-plan", 10, 30, usage((SONNET, tokens(2, 2, 2, 2, peak=900))), caller_session_id="orch"),
        run("later", "review", 200, 10, usage((SONNET, tokens(4, 4, 4, 4, peak=100)))),
    ]
    total = build_report(runs).total
    assert total.sessions == 3
    assert total.usage == tokens(7, 7, 7, 7, turns=3, peak=900)
    assert total.seconds == 110  # the skill ran while its orchestrator waited
    assert [row.seconds for row in build_report(runs).steps] == [100, 30, 10]


def test_a_run_still_going_counts_its_time_up_to_now_and_has_no_figures_yet() -> None:
    report = build_report([run("live", "implement", 0, None, SessionUsage())], now=T0 + 90)
    (row,) = report.steps
    assert (row.seconds, row.partial, row.models) == (90, True, ["default"])
    assert [note.text for note in report.footnotes] == [
        "Partial: a session was still running, or its server had stopped, at the time of this report: no figures yet."
    ]


def test_a_session_that_ended_before_its_result_is_partial_and_says_where_its_figures_come_from() -> None:
    crashed = run(
        "c1",
        "implement",
        0,
        5,
        usage((SONNET, tokens(5, 5)), source=UsageSource.TRANSCRIPT),
        status=RunStatus.FAILURE,
        termination=Termination.CRASHED,
    )
    report = build_report([crashed, run("ok", "review", 10, 1)])
    assert [(row.step, row.partial) for row in report.steps] == [("implement", True), ("review", False)]
    assert report.total.partial
    assert [(note.mark, note.text.split(":")[0]) for note in report.footnotes] == [("†", "Partial")]
    assert "without its result event" in report.footnotes[0].text


def test_a_launch_that_failed_spent_nothing_and_is_not_partial() -> None:
    failed = run(
        "f1",
        "plan",
        0,
        0.1,
        SessionUsage(),
        model="opus",
        status=RunStatus.FAILURE,
        termination=Termination.LAUNCH_FAILED,
    )
    report = build_report([failed])
    (row,) = report.steps
    assert (row.models, row.partial, row.usage) == (["opus"], False, TokenUsage())
    assert report.footnotes == []


def test_a_plain_command_step_spends_no_tokens_and_is_complete() -> None:
    report = build_report([run("cmd", "test", 0, 12, SessionUsage(), loc_changed=0)])
    (row,) = report.steps
    assert (row.step, row.models, row.partial, row.seconds) == ("test", ["default"], False, 12)
    assert report.footnotes == []


def test_models_come_from_the_figures_and_ones_without_a_token_are_left_out() -> None:
    figures = usage(("claude-opus-4-5", tokens(5, 500, 9000, 100)), ("<synthetic>", tokens(turns=1)))
    report = build_report([run("o1", "plan", 0, 1, figures, model="opus")])
    assert report.steps[0].models == ["claude-opus-4-5"]
    assert not report.steps[0].non_anthropic
    assert [row.model for row in report.models] == ["claude-opus-4-5"]


def test_the_model_breakdown_counts_steps_and_gives_each_session_s_time_to_its_main_model() -> None:
    mixed = usage((SONNET, tokens(10, 900, 50_000, 2000)), ("claude-haiku-4-5", tokens(300, 40)))
    runs = [
        run("a", "implement", 0, 60, mixed),
        run("b", "review", 100, 30, usage((SONNET, tokens(1, 1, 1, 1)))),
        run("c", "summarize", 200, 10, usage(("claude-haiku-4-5", tokens(7, 7)))),
    ]
    rows = {row.model: row for row in build_report(runs).models}
    assert list(rows) == [SONNET, "claude-haiku-4-5"]
    assert (rows[SONNET].steps, rows[SONNET].seconds, rows[SONNET].usage.output_tokens) == (2, 90, 901)
    haiku = rows["claude-haiku-4-5"]
    assert (haiku.steps, haiku.seconds, haiku.usage.input_tokens) == (2, 10, 307)
    assert build_report(runs).steps[0].models == [SONNET, "claude-haiku-4-5"]


def test_another_provider_is_flagged_on_its_rows_and_named_in_a_footnote() -> None:
    runs = [
        run("a", "plan", 0, 1),
        run("b", "summarize", 10, 1, usage(("glm-4.6", tokens(5, 5))), api_base_url="https://k:s@api.z.ai/x"),
        run("c", "review", 20, 1, api_base_url="https://api.anthropic.com"),
    ]
    report = build_report(runs)
    assert [(row.step, row.non_anthropic) for row in report.steps] == [
        ("plan", False),
        ("summarize", True),
        ("review", False),
    ]
    assert [(row.model, row.non_anthropic) for row in report.models] == [(SONNET, False), ("glm-4.6", True)]
    (note,) = report.footnotes
    assert note.mark == "*"
    assert "(API base URL https://api.z.ai; model glm-4.6)" in note.text


def test_a_claude_model_behind_a_gateway_is_flagged_by_its_base_url() -> None:
    report = build_report([run("a", "plan", 0, 1, api_base_url="http://127.0.0.1:4000/v1")])
    assert report.steps[0].non_anthropic
    assert report.models[0].non_anthropic
    assert "(API base URL http://127.0.0.1:4000)" in report.footnotes[0].text


def test_lines_changed_per_step_and_in_total_count_each_tree_of_runs_once() -> None:
    runs = [
        run("orch", "orchestrator", 0, 100, loc_changed=30),
        run("skill", "/implement", 10, 30, loc_changed=20, caller_session_id="orch"),
        run("fix", "fix", 200, 10, loc_changed=5),
        run("fix", "fix", 300, 10, loc_changed=7),  # the same session resumed: a second launch
    ]
    report = build_report(runs)
    assert [(row.step, row.loc_changed) for row in report.efficiency] == [
        ("orchestrator", 30),
        ("/implement", 20),
        ("fix", 12),
    ]
    assert report.total.loc_changed == 30 + 12  # the orchestrator's measure holds its skill's lines


def test_a_tree_whose_root_was_not_measured_counts_what_its_callees_measured() -> None:
    runs = [
        run("orch", "orchestrator", 0, 100, loc_changed=None),
        run("s1", "/plan", 10, 5, loc_changed=4, caller_session_id="orch"),
        run("s2", "/implement", 20, 5, loc_changed=None, caller_session_id="orch"),
        run("s3", "/test", 22, 1, loc_changed=6, caller_session_id="s2"),
    ]
    assert build_report(runs).total.loc_changed == 10


def test_ratios_are_tokens_per_line_and_empty_when_nothing_or_nothing_measured_changed() -> None:
    runs = [
        run("a", "implement", 0, 1, usage((SONNET, tokens(0, 80, 4000, 400))), loc_changed=40),
        run("b", "review", 10, 1, usage((SONNET, tokens(0, 20, 1000, 100))), loc_changed=0),
        run("c", "summarize", 20, 1, usage((SONNET, tokens(0, 10, 10, 10))), loc_changed=None),
    ]
    report = build_report(runs)
    implement, review, summarize = report.efficiency
    assert (implement.cache_read_per_loc, implement.cache_write_per_loc, implement.output_per_loc) == (100, 10, 2)
    assert (review.loc_changed, review.cache_read_per_loc, review.output_per_loc) == (0, None, None)
    assert (summarize.loc_changed, summarize.cache_read_per_loc) == (None, None)
    total = report.efficiency_total
    assert (total.step, total.loc_changed, total.output_per_loc) == ("Total", 40, 110 / 40)


def test_a_dispatched_pipeline_runner_has_no_row_but_its_span_and_lines_count() -> None:
    runs = [
        run("runner", "pipeline", 0, 500, usage(), kind=SessionKind.PIPELINE, loc_changed=25),
        run("s1", "plan", 5, 100, loc_changed=10, caller_session_id="runner"),
        run("s2", "implement", 200, 100, loc_changed=15, caller_session_id="runner"),
    ]
    report = build_report(runs)
    assert [row.step for row in report.steps] == ["plan", "implement"]
    assert (report.total.sessions, report.total.seconds, report.total.loc_changed) == (2, 500, 25)


def test_a_campaign_holds_the_runs_its_sessions_called_however_deep(tmp_path: Path) -> None:
    runs = [
        run("orch", "orchestrator", 0, 100, job_name="fix"),
        run("skill", "/plan", 1, 1, campaign_id=None, caller_session_id="orch"),
        run("nested", "/lint", 2, 1, campaign_id=None, caller_session_id="skill"),
        run("other-job", "orchestrator", 3, 1, job_name="docs"),
        run("stranger", "/plan", 4, 1, campaign_id=None, caller_session_id="someone-else"),
        run("elsewhere", "orchestrator", 5, 1, campaign_id="d", job_name="fix"),
    ]
    store = SqliteCampaignStore(tmp_path / "state.sqlite3")
    try:
        for recorded in runs:
            store.record_run_started(recorded)
        # A resumed launch of the nested session counts too.
        store.record_run_finished(
            "nested", status=RunStatus.FAILURE, termination=Termination.CRASHED, usage=SessionUsage(), reason="x"
        )
        store.record_run_started(run("nested", "/lint", 9, None, campaign_id=None, caller_session_id="skill"))
        assert [r.run_id for r in campaign_runs(store, "c")] == ["orch", "skill", "nested", "other-job", "nested"]
        assert [r.run_id for r in campaign_runs(store, "c", job_name="fix")] == ["orch", "skill", "nested", "nested"]
        assert campaign_runs(store, "nope") == []
    finally:
        store.close()


def test_job_usage_adds_runs_up_and_is_partial_when_any_figures_are_missing() -> None:
    done = [
        run("orch", "orchestrator", 0, 100, usage((SONNET, tokens(1, 2, 3, 4)))),
        run("skill", "/plan", 1, 1, usage(("claude-opus-4-5", tokens(10, 20, 30, 40)))),
    ]
    together = job_usage(done)
    assert together.total == tokens(11, 22, 33, 44, turns=2)
    assert set(together.by_model) == {SONNET, "claude-opus-4-5"}
    assert (together.partial, together.source) == (False, UsageSource.RESULT_EVENT)
    assert job_usage([*done, run("live", "/test", 2, None, SessionUsage())]).partial


def test_a_session_still_running_is_reported_with_its_transcript_so_far(tmp_path: Path) -> None:
    transcript = Path(__file__).parents[1] / "data" / "usage" / "plan.transcript.jsonl"
    store = SqliteCampaignStore(tmp_path / "state.sqlite3")
    try:
        here = OWNER.model_copy(update={"host": store.host})  # only this host's transcripts are read
        store.record_run_started(
            run("live", "plan", 0, None, SessionUsage(), transcript_path=str(transcript), owner=here)
        )
        (row,) = campaign_report(store, "c", now=T0 + 30).steps
        assert row.usage.output_tokens > 0
        assert row.partial
    finally:
        store.close()
