"""Stress the kill path: many sessions of random shapes, ended at random moments; count survivors.

Shapes mix SIGTERM-ignoring agents, plain children, setsid children, double-forked daemons and
CPU burners; with cgroup containment also daemons that exec with a clean environment (which the
tree fallback cannot find: the README says so). Each run is cancelled at a random moment (some
before they even finish starting), while its caller holds an execution marker. Every
``settle_every``-th session is cancelled only once all its children are running (each agent logs
to its own file, so "all its children" is known, not guessed): however slow the machine, those
sessions prove the kill of a whole tree, while the rest probe the start-up races. Reported:
sessions, processes seen, survivors (processes still alive afterwards), markers, registry entries
and session groups left behind. Target: 0 of each.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import psutil

from expeditor.config import Settings, load_settings
from expeditor.executor import ClaudeCodeExecutor, RunControl, RunRequest, choose_containment
from expeditor.executor.containment import ContainmentSetting
from expeditor.monitor import execution_marker
from expeditor.runs import build_executor

FAKE_AGENT = "python -m expeditor.testing.fake_agent"


def random_scenario(rng: random.Random, *, clean_env: bool) -> dict[str, Any]:
    spawn: dict[str, Any] = {"sleep": 120, "count": rng.randint(1, 3)}
    shapes = ["plain", "setsid", "double_fork", "burn_cpu", "ignore_sigterm", *(["clean_env"] if clean_env else [])]
    shape = rng.choice(shapes)
    if shape != "plain":
        spawn[shape] = True
    return {
        "ignore_sigterm": rng.random() < 0.3,
        "steps": [{"assistant": "working"}, {"spawn": spawn}, {"hang": True}],
    }


async def one_session(
    executor: ClaudeCodeExecutor,
    settings: Settings,
    root: Path,
    rng: random.Random,
    log: Path,
    index: int,
    *,
    settle: bool,
) -> bool:
    """Run one session and cancel it; True when it was cancelled with all its children running."""
    scenario = random_scenario(
        rng, clean_env=executor.containment is not None and executor.containment.kind == "cgroup"
    )
    request = RunRequest(
        prompt="/stress",
        cwd=root,
        env={"EXPEDITOR_FAKE_SCENARIO": json.dumps(scenario), "EXPEDITOR_FAKE_LOG": str(log)},
    )
    control = RunControl()
    caller = f"stress-caller-{index}"
    children = scenario["steps"][1]["spawn"]["count"]
    delay = rng.uniform(0.0, 0.3) if settle else rng.uniform(0.0, 1.5)
    settled = False
    async with anyio.create_task_group() as group:

        async def cancel_at_random() -> None:
            nonlocal settled
            if settle:
                # The agent's log is the only word on when its children are in their final state.
                while len(await anyio.to_thread.run_sync(_logged_pids, log, "spawned")) < children:
                    await anyio.sleep(0.02)
                settled = True
            await anyio.sleep(delay)
            if rng.random() < 0.5:
                control.cancel("stress: cancelled", grace=rng.choice([0.0, 0.05, 0.2]))
            else:
                group.cancel_scope.cancel()  # the caller itself is cancelled

        group.start_soon(cancel_at_random)
        async with execution_marker(settings.markers_path, "run-skill", caller, heartbeat_interval=0.2):
            await executor.run(request, marker_dir=settings.markers_path, caller_session_id=caller, control=control)
        group.cancel_scope.cancel()
    return settled


async def stress(
    sessions: int, concurrency: int, seed: int, containment: ContainmentSetting = "auto", settle_every: int = 4
) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="expeditor-stress-") as name:
        root = Path(await anyio.Path(name).resolve())
        settings = load_settings(
            home=root / "home",
            claude_command=FAKE_AGENT.replace("python", sys.executable, 1),
            claude_config_dir=root / "claude",
            allowed_roots=(root,),
            kill_grace=0.3,
            children_interval=0.5,
        )
        chosen = choose_containment(containment)
        executor = build_executor(settings, containment=chosen)
        logs = [root / f"agent-{index}.log" for index in range(sessions)]
        slots = anyio.Semaphore(concurrency)
        settled = 0

        async def bounded(index: int) -> None:
            nonlocal settled
            async with slots:
                settle = index % settle_every == 0
                if await one_session(executor, settings, root, rng, logs[index], index, settle=settle):
                    settled += 1

        async with anyio.create_task_group() as group:
            for index in range(sessions):
                group.start_soon(bounded, index)
        pids = [pid for log in logs for pid in await anyio.to_thread.run_sync(_logged_pids, log)]
        await anyio.sleep(0.5)  # init reaps what it adopted
        survivors = [pid for pid in pids if _alive(pid)]
        if survivors and "--verbose" in sys.argv:
            for pid in survivors:
                process = psutil.Process(pid)
                print("survivor", pid, process.ppid(), process.cmdline(), process.environ().get("EXPEDITOR_SESSION_ID"))
        for pid in survivors:
            psutil.Process(pid).kill()
        markers = list(settings.markers_path.glob("*.marker")) if settings.markers_path.exists() else []
        entries = list(settings.sessions_dir.glob("*.json")) if settings.sessions_dir.exists() else []
        groups = [group for group in chosen.server_group.iterdir() if group.is_dir()] if chosen.server_group else []
        chosen.close()
        return {
            "containment": chosen.kind,
            "groups_left": len(groups),
            "sessions": sessions,
            "settled": settled,
            "settled_expected": len(range(0, sessions, settle_every)),
            "processes": len(pids),
            "survivors": len(survivors),
            "markers_left": len(markers),
            "registry_left": len(entries),
        }


def _logged_pids(log: Path, *events: str) -> list[int]:
    """Pids an agent's log records for ``events`` (default: its launch and every child it spawned)."""
    if not log.exists():
        return []
    wanted = events or ("launch", "spawned")
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]
    return [entry["pid"] for entry in entries if entry["event"] in wanted]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--verbose", action="store_true", help="describe every survivor")
    parser.add_argument("--containment", choices=("auto", "cgroup", "tree"), default="auto")
    arguments = parser.parse_args()
    started = time.perf_counter()
    figures = anyio.run(stress, arguments.sessions, arguments.concurrency, arguments.seed, arguments.containment)
    elapsed = time.perf_counter() - started
    print(
        f"{figures['sessions']} sessions ({figures['processes']} processes, {figures['settled']} sessions killed with "
        f"all their children running, containment {figures['containment']}) "
        f"killed at random moments in {elapsed:.1f}s: {figures['survivors']} survivors, {figures['markers_left']} "
        f"markers left, {figures['registry_left']} registry entries left, {figures['groups_left']} session groups "
        "left (target 0, 0, 0, 0)"
    )


if __name__ == "__main__":
    main()
