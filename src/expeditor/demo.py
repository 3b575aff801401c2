"""``expeditor demo``: the supervision story in a few seconds, on the bundled fake agent.

Everything runs in a temporary home with the fake agent as the agent command: no API key, no
network. Each outcome is checked, not just shown; the demo exits non-zero if one did not happen.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psutil
from rich.console import Console
from rich.table import Table

from expeditor.config import Settings, load_settings
from expeditor.executor import ClaudeCodeExecutor, RunRequest, RunResult, Termination

__all__ = ["run_demo"]

STALE_THRESHOLD = 1.5
BLOCKED_FOR = 4.0


@dataclass(frozen=True)
class Outcome:
    title: str
    passed: bool
    detail: str
    result: RunResult


def demo_settings(root: Path) -> Settings:
    return load_settings(
        home=root / "home",
        claude_command=f"{sys.executable} -m expeditor.testing.fake_agent",
        claude_config_dir=root / "claude",
        allowed_roots=(root,),
        stale_threshold=STALE_THRESHOLD,
        poll_interval=0.1,
        children_interval=0.5,
        kill_grace=0.5,
        marker_freshness=2,
    )


def _request(root: Path, prompt: str, steps: list[dict[str, Any]]) -> RunRequest:
    return RunRequest(
        prompt=prompt, cwd=root, model="sonnet", env={"EXPEDITOR_FAKE_SCENARIO": json.dumps({"steps": steps})}
    )


def _usage(output: int, cache_read: int) -> dict[str, int]:
    return {"input": 12, "output": output, "cache_read": cache_read, "cache_write": 900}


BLOCKED_STEPS: list[dict[str, Any]] = [
    {
        "assistant": {
            "content": "Starting the 40-minute diagnostic via run_skill.",
            "usage": _usage(120, 18_000),
        }
    },
    # What expeditor's run_skill handler does for its caller: hold a heartbeat-touched marker.
    {"marker": {"hold": BLOCKED_FOR, "heartbeat": 0.2}},
    {
        "assistant": {
            "content": "Diagnostic finished: root cause found in the cache layer.",
            "usage": _usage(640, 21_500),
        }
    },
    {"result": {}},
]

STUCK_STEPS: list[dict[str, Any]] = [
    {"assistant": {"content": "Starting a dev server and the test watcher.", "usage": _usage(90, 15_000)}},
    {"spawn": {"sleep": 600, "close_stdio": True}},
    {"spawn": {"sleep": 600, "setsid": True, "close_stdio": True}},
    {"hang": True},
]


async def _outcomes(settings: Settings, root: Path, console: Console) -> list[Outcome]:
    executor = ClaudeCodeExecutor(settings)
    results: dict[str, RunResult] = {}

    async def run(name: str, request: RunRequest) -> None:
        results[name] = await executor.run(request, marker_dir=settings.markers_path, caller_session_id=None)
        console.print(f"  [dim]{name} session ended after {results[name].duration_s:.1f}s[/dim]")

    console.print(
        f"Running two sessions with a stale threshold of {STALE_THRESHOLD:g}s "
        f"(production default: 1200s), side by side..."
    )
    async with anyio.create_task_group() as group:
        group.start_soon(run, "blocked", _request(root, "/diagnose flaky-cache", BLOCKED_STEPS))
        group.start_soon(run, "stuck", _request(root, "/implement 42", STUCK_STEPS))

    blocked, stuck = results["blocked"], results["stuck"]
    survivors = [k.pid for k in stuck.killed if psutil.pid_exists(k.pid) and _not_zombie(k.pid)]
    return [
        Outcome(
            f"A session blocked {BLOCKED_FOR:g}s on a tool call survives its {STALE_THRESHOLD:g}s stale threshold",
            blocked.success and blocked.suppressed_s > 0,
            f"{blocked.termination.value}; silent but vouched for by its execution marker for "
            f"{blocked.suppressed_s:.1f}s",
            blocked,
        ),
        Outcome(
            "A truly stuck session is killed as stale, with its whole process tree",
            stuck.termination is Termination.STALE and len(stuck.killed) >= 3 and not survivors,
            f"{stuck.termination.value}: {stuck.reason}; killed {len(stuck.killed)} processes "
            f"({sum(k.escaped for k in stuck.killed)} had escaped its process group), {len(survivors)} survived",
            stuck,
        ),
    ]


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _usage_table(outcomes: list[Outcome]) -> Table:
    table = Table(title="Token usage (from each session's result event, or its transcript if it died first)")
    for column in ("Session", "Model", "uncached", "output", "cache_read", "cache_write", "peak_ctx", "time"):
        table.add_column(column, justify="left" if column in ("Session", "Model") else "right")
    for name, outcome in zip(("blocked", "stuck"), outcomes, strict=True):
        usage = outcome.result.usage
        total = usage.total
        model = ", ".join(usage.by_model) or "-"
        table.add_row(
            name + (" (partial)" if usage.partial else ""),
            model,
            f"{total.input_tokens:,}",
            f"{total.output_tokens:,}",
            f"{total.cache_read_tokens:,}",
            f"{total.cache_write_tokens:,}",
            f"{total.peak_context:,}",
            f"{outcome.result.duration_s:.1f}s",
        )
    return table


def run_demo(console: Console | None = None) -> int:
    """Run the demo; 0 only when every outcome happened as claimed."""
    console = console or Console()
    with tempfile.TemporaryDirectory(prefix="expeditor-demo-") as root_name:
        root = Path(root_name).resolve()
        settings = demo_settings(root)
        console.rule("expeditor demo: the fake agent, no API key")
        outcomes = anyio.run(_outcomes, settings, root, console)
        for number, outcome in enumerate(outcomes, start=1):
            mark = "[green]PASS[/green]" if outcome.passed else "[red]FAIL[/red]"
            console.print(f"{mark} {number}. {outcome.title}\n      {outcome.detail}")
        console.print(_usage_table(outcomes))
        leftovers = list(settings.markers_path.glob("*.marker")) if settings.markers_path.exists() else []
        if leftovers:
            console.print(f"[red]FAIL[/red] markers left behind: {[p.name for p in leftovers]}")
        passed = all(outcome.passed for outcome in outcomes) and not leftovers
        console.print("[green]All outcomes happened.[/green]" if passed else "[red]Some outcomes did not happen.[/red]")
        return 0 if passed else 1
