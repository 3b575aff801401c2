"""Kill time of a session tree: from the decisive event to the last process gone.

Two shapes: a tree that obeys SIGTERM (target < 50 ms) and one that ignores it (target: the
grace + < 50 ms). Each run is a fake agent with two children, ended by its wall-clock limit.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anyio

from bench._common import bench_settings, describe, scenario_request, temp_root
from expeditor.executor import ClaudeCodeExecutor, RunControl, RunResult, choose_containment
from expeditor.executor.containment import ContainmentSetting
from expeditor.runs import build_executor


async def kill_once(executor: ClaudeCodeExecutor, root: Path, ignore_sigterm: bool, log: Path, index: int) -> float:
    scenario = {
        "ignore_sigterm": ignore_sigterm,
        "steps": [{"spawn": {"sleep": 60, "count": 2, "ignore_sigterm": ignore_sigterm}}, {"hang": True}],
    }
    control = RunControl()
    decided_at = 0.0
    result: RunResult | None = None
    async with anyio.create_task_group() as group:

        async def cancel_soon() -> None:
            nonlocal decided_at
            await control.started.wait()
            # Wait for the agent's children: the tree must be whole when the kill starts.
            while len([line for line in log.read_text().splitlines() if '"spawned"' in line]) < 2 * (index + 1):
                await anyio.sleep(0.01)
            decided_at = time.perf_counter()
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
    assert len(result.killed) >= 3, result.killed
    return elapsed


async def main(runs: int, grace: float, containment_setting: ContainmentSetting) -> None:
    with temp_root() as root_name:
        root = Path(root_name)
        containment = choose_containment(containment_setting)
        executor = build_executor(bench_settings(root, kill_grace=grace), containment=containment)
        log = root / "agents.log"
        log.touch()
        obeying = [await kill_once(executor, root, False, log, index) for index in range(runs)]
        ignoring = [await kill_once(executor, root, True, log, runs + index) for index in range(runs)]
        print(describe("tree obeying SIGTERM ", obeying) + " (target < 50 ms)")
        print(describe("tree ignoring SIGTERM", ignoring) + f" (target < grace {grace * 1000:.0f} ms + 50 ms)")
        print(f"containment: {containment.kind}")
        containment.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--grace", type=float, default=0.5)
    parser.add_argument("--containment", choices=("auto", "cgroup", "tree"), default="auto")
    arguments = parser.parse_args()
    anyio.run(main, arguments.runs, arguments.grace, arguments.containment)
