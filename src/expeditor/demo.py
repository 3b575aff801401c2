"""``expeditor demo``: the bundled demo campaign on the bundled fake agent, four outcomes checked.

Everything runs in a temporary home with the fake agent as the agent command: no API key, no
network. The demo dispatches the ``demo`` recipe (a pipeline) as a real managed child, follows
its steps live from the campaign store, then dispatches it again. Each outcome is checked from
the records, not just shown; the demo exits non-zero if one did not happen.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import psutil
from rich.console import Console

from expeditor.config import Settings, load_settings
from expeditor.dispatch import DispatchOutcome, DispatchService
from expeditor.executor import Termination
from expeditor.monitor import parse_marker_name
from expeditor.recipes.progress import format_duration, tokens_of
from expeditor.reports import UsageReport, campaign_report, render_markdown, render_table
from expeditor.runs import CallerContext, Runtime, open_runtime
from expeditor.state import CampaignStore, RunRecord, StepExecution, StepStatus

__all__ = ["run_demo"]

CAMPAIGN = "demo"
JOB = "toy-project"
RECIPE = "demo"
_FOLLOW_INTERVAL = 0.1


@dataclass(frozen=True)
class Outcome:
    title: str
    passed: bool
    detail: str


def scenario_dir() -> Path:
    """The fake agent's scenario for each /demo-* command of the demo recipe."""
    return Path(__file__).parent / "testing" / "demo_scenarios"


def _project(root: Path) -> Path:
    """The toy project the demo's steps work in: a git work tree when git is here, so lines changed count."""
    project = root / "toy-project"
    project.mkdir()
    git = shutil.which("git")
    if git is not None:
        subprocess.run([git, "init", "-q"], cwd=project, check=False, capture_output=True)
    return project


def demo_settings(root: Path) -> Settings:
    return load_settings(
        home=root / "home",
        claude_command=f"{sys.executable} -m expeditor.testing.fake_agent",
        claude_config_dir=root / "claude",
        allowed_roots=(root,),
        poll_interval=0.1,
        children_interval=0.5,
        kill_grace=0.5,
        marker_freshness=2,
        marker_heartbeat_interval=0.5,
    )


def _step_line(execution: StepExecution, run: RunRecord | None) -> str:
    if execution.status is StepStatus.RUNNING:
        return f"  [cyan]running[/cyan] {execution.sequence}. {execution.step}"
    style = {StepStatus.SUCCESS: "green", StepStatus.SKIPPED: "dim"}.get(execution.status, "red")
    elapsed = (execution.finished_at or 0) - (execution.started_at or 0)
    line = (
        f"  [{style}]{execution.status.value:>7}[/{style}] {execution.sequence}. {execution.step} "
        f"in {format_duration(elapsed)}, {tokens_of(execution.usage):,} tokens"
    )
    if run is not None and run.termination is not None and run.termination is not Termination.COMPLETED:
        line += f" ({run.termination.value}: {run.reason})"
    elif execution.status is StepStatus.SKIPPED:
        line += f" ({execution.reason})"
    return line


async def _follow(store: CampaignStore, console: Console) -> None:
    """Print each step execution as it starts and ends, read from the store like `expeditor status` does."""
    shown: dict[int, StepStatus] = {}
    while True:
        for execution in await anyio.to_thread.run_sync(store.list_steps, CAMPAIGN, JOB):
            if shown.get(execution.sequence) is execution.status:
                continue
            shown[execution.sequence] = execution.status
            run = store.get_run(execution.run_id) if execution.run_id else None
            console.print(_step_line(execution, run))
        await anyio.sleep(_FOLLOW_INTERVAL)


async def _dispatch(service: DispatchService, root: Path) -> DispatchOutcome:
    return await service.dispatch(CAMPAIGN, JOB, RECIPE, {}, caller=CallerContext(None, None), cwd=root / "toy-project")


async def _campaign(runtime: Runtime, root: Path, console: Console) -> tuple[list[Outcome], UsageReport]:
    store = runtime.store
    service = DispatchService(runtime)
    console.print(f"Dispatching {CAMPAIGN}/{JOB} (recipe {RECIPE!r}, a pipeline of 5 steps) on the fake agent:")
    first: DispatchOutcome | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(_follow, store, console)
        first = await _dispatch(service, root)
        await anyio.sleep(2 * _FOLLOW_INTERVAL)  # let the last step's line be printed
        group.cancel_scope.cancel()
    assert first is not None
    console.print(f"  dispatch {first.status.value}: {first.message}\n")

    console.print(f"Dispatching {CAMPAIGN}/{JOB} again:")
    launched_before = len(store.list_runs())
    started = time.perf_counter()
    repeat = await _dispatch(service, root)
    repeat_ms = (time.perf_counter() - started) * 1000
    console.print(f"  {repeat.message} ({repeat_ms:.1f} ms)\n")

    runs = {run.label: run for run in store.list_runs(CAMPAIGN, job_name=JOB)}
    outcomes = [
        _blocked_outcome(runs.get("build")),
        _stuck_outcome(runs.get("probe")),
        Outcome(
            "A repeat dispatch of the finished job returns at once, running nothing",
            first.status.value == "success"
            and repeat.short_circuited
            and len(store.list_runs()) == launched_before
            and repeat_ms < 1000,
            f"short_circuited={repeat.short_circuited} in {repeat_ms:.1f} ms, same dispatch "
            f"{repeat.dispatch_id[:8]}, {len(store.list_runs()) - launched_before} sessions started",
        ),
    ]
    return outcomes, campaign_report(store, CAMPAIGN)


def _blocked_outcome(build: RunRecord | None) -> Outcome:
    title = "A step blocked on a long tool call survives its stale threshold, thanks to its execution marker"
    if build is None or build.evidence is None:
        return Outcome(title, False, "the build step has no finished run on record")
    vouched = build.evidence.suppressed_s
    labels = ", ".join(_marker_label(s.marker) for s in build.evidence.suppressed_by) or "no"
    return Outcome(
        title,
        build.termination is Termination.COMPLETED and vouched > 0,
        f"build: {build.termination.value if build.termination else 'running'}; silent 4s against a 1.5s "
        f"threshold, vouched for {vouched:.1f}s by its {labels} marker",
    )


def _marker_label(name: str) -> str:
    parsed = parse_marker_name(name)
    return parsed[0] if parsed is not None else name


def _stuck_outcome(probe: RunRecord | None) -> Outcome:
    title = "A truly stuck step is killed as stale, with its whole process tree"
    if probe is None or probe.evidence is None:
        return Outcome(title, False, "the probe step has no finished run on record")
    killed = probe.evidence.killed
    survivors = [k.pid for k in killed if _alive(k.pid)]
    escaped = sum(k.escaped for k in killed)
    return Outcome(
        title,
        probe.termination is Termination.STALE and len(killed) >= 3 and not survivors,
        f"probe: {probe.termination.value if probe.termination else 'running'}: {probe.reason}; killed "
        f"{len(killed)} processes ({escaped} had left its process group), {len(survivors)} survived",
    )


def _report_outcome(report: UsageReport) -> Outcome:
    steps = [row.step for row in report.steps]
    return Outcome(
        "The token usage report: per step, efficiency and per model, in the three-table format",
        bool(report.steps) and bool(report.models) and "build" in steps and report.total.sessions >= 5,
        f"{len(report.steps)} steps ({', '.join(steps)}), {len(report.models)} models, "
        f"{report.total.sessions} sessions, {report.total.loc_changed or 0} lines changed (measured by git)",
    )


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def _demo_campaign(
    settings: Settings, env: dict[str, str], root: Path, console: Console
) -> tuple[list[Outcome], UsageReport]:
    async with open_runtime(settings, env=env, closing_reason="the demo is stopping") as runtime:
        return await _campaign(runtime, root, console)


def run_demo(console: Console | None = None, *, markdown_out: Path | None = None) -> int:
    """Run the demo; 0 only when every outcome happened as claimed."""
    console = console or Console()
    with tempfile.TemporaryDirectory(prefix="expeditor-demo-") as root_name:
        root = Path(root_name).resolve()
        settings = demo_settings(root)
        _project(root)
        console.rule("expeditor demo: the bundled demo campaign on the fake agent (no API key, no network)")
        # The fake agent finds each /demo-* command's scenario here; only the demo's sessions see it.
        env = {**os.environ, "EXPEDITOR_FAKE_SCENARIO_DIR": str(scenario_dir())}
        outcomes, report = anyio.run(_demo_campaign, settings, env, root, console)
        outcomes.append(_report_outcome(report))
        render_table(report, console)
        if markdown_out is not None:
            markdown_out.write_text(render_markdown(report))
        leftovers = list(settings.markers_path.glob("*.marker")) if settings.markers_path.exists() else []
        console.print()
        for number, outcome in enumerate(outcomes, start=1):
            mark = "[green]PASS[/green]" if outcome.passed else "[red]FAIL[/red]"
            console.print(f"{mark} {number}. {outcome.title}\n      {outcome.detail}")
        if leftovers:
            console.print(f"[red]FAIL[/red] markers left behind: {[p.name for p in leftovers]}")
        passed = all(outcome.passed for outcome in outcomes) and not leftovers
        console.print(
            "[green]All four outcomes happened.[/green]" if passed else "[red]Some outcomes did not happen.[/red]"
        )
        return 0 if passed else 1
