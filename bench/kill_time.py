"""Kill time of a session tree: from the decisive event to the first SIGTERM and to the last process gone.

Two shapes: a tree that obeys SIGTERM (target < 20 ms) and one that ignores it (target: the grace +
< 20 ms). Each run is a fake agent with ``--children`` children (2 by default; 49 for the issue's
50-process tree), cancelled once they all exist. The first SIGTERM is the time the agent's handler
logged it (the same clock, system-wide), target < 2 ms.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anyio

from bench._common import bench_settings, describe, scenario_request, temp_root
from expeditor.executor import ClaudeCodeExecutor, RunControl, RunResult, choose_containment
from expeditor.executor.containment import ContainmentSetting
from expeditor.runs import build_executor


def _first_sigterm_after(log: Path, decided_wall: float) -> float:
    times = [
        record["time"]
        for record in map(json.loads, log.read_text().splitlines())
        if record["event"] == "signal" and record["time"] >= decided_wall
    ]
    return min(times) - decided_wall


async def kill_once(
    executor: ClaudeCodeExecutor, root: Path, ignore_sigterm: bool, log: Path, children: int, spawned_before: int
) -> tuple[float, float]:
    """(decision → first SIGTERM, decision → last process gone) for one run."""
    scenario = {
        "ignore_sigterm": ignore_sigterm,
        "steps": [{"spawn": {"sleep": 60, "count": children, "ignore_sigterm": ignore_sigterm}}, {"hang": True}],
    }
    control = RunControl()
    decided_at = 0.0
    decided_wall = 0.0
    result: RunResult | None = None
    async with anyio.create_task_group() as group:

        async def cancel_soon() -> None:
            nonlocal decided_at, decided_wall
            await control.started.wait()
            # Wait for the agent's children: the tree must be whole when the kill starts.
            wanted = spawned_before + children
            while len([line for line in log.read_text().splitlines() if '"spawned"' in line]) < wanted:
                await anyio.sleep(0.01)
            decided_at, decided_wall = time.perf_counter(), time.time()
            control.cancel("bench")

        group.start_soon(cancel_soon)
        result = await executor.run(
            scenario_request(root, scenario, env={"EXPEDITOR_FAKE_LOG": str(log)}),
            marker_dir=None,
            caller_session_id=None,
            control=control,
        )
    elapsed = time.perf_counter() - decided_at
    assert result is not None
    assert len(result.killed) >= children + 1, result.killed
    return _first_sigterm_after(log, decided_wall), elapsed


async def main(runs: int, grace: float, children: int, containment_setting: ContainmentSetting) -> None:
    with temp_root() as root_name:
        root = Path(root_name)
        containment = choose_containment(containment_setting)
        executor = build_executor(bench_settings(root, kill_grace=grace), containment=containment)
        log = root / "agents.log"
        log.touch()
        obeying = [await kill_once(executor, root, False, log, children, index * children) for index in range(runs)]
        ignoring = [
            await kill_once(executor, root, True, log, children, (runs + index) * children) for index in range(runs)
        ]
        first = [sample for sample, _ in obeying + ignoring]
        print(f"containment: {containment.kind}, a tree of {children + 1} processes")
        print(describe("decision -> first SIGTERM", first) + " (target < 2 ms)")
        print(describe("tree obeying SIGTERM     ", [gone for _, gone in obeying]) + " (target < 20 ms)")
        print(
            describe("tree ignoring SIGTERM    ", [gone for _, gone in ignoring])
            + f" (target < grace {grace * 1000:.0f} ms + 20 ms)"
        )
        containment.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--grace", type=float, default=0.5)
    parser.add_argument("--children", type=int, default=2, help="children of the agent (49: a 50-process tree)")
    parser.add_argument("--containment", choices=("auto", "cgroup", "tree"), default="auto")
    arguments = parser.parse_args()
    anyio.run(main, arguments.runs, arguments.grace, arguments.children, arguments.containment)
