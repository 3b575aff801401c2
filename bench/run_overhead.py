"""run_managed overhead: the full executor (spawn, parse, watch, kill sweep) against a bare launch.

Both sides run the same fake agent command with the same scenario; the bare launch only spawns
it with anyio, reads stdout to EOF and waits. Target: < 50 ms per run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import anyio

from bench._common import FAKE_AGENT, bench_settings, describe, scenario_request, temp_root
from expeditor.executor import choose_containment
from expeditor.executor.containment import ContainmentSetting
from expeditor.runs import build_executor

SCENARIO = {"steps": [{"assistant": "done"}, {"result": {}}]}


async def bare(cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    process = await anyio.open_process(
        [*FAKE_AGENT, "-p", "/bench", "--output-format", "stream-json", "--verbose"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
    )
    async with process:
        assert process.stdout is not None
        async for _ in process.stdout:
            pass
        await process.wait()
    return time.perf_counter() - started


async def main(runs: int, containment_setting: ContainmentSetting) -> None:
    import os

    with temp_root() as root_name:
        root = Path(root_name)
        settings = bench_settings(root)
        containment = choose_containment(containment_setting)
        executor = build_executor(settings, containment=containment)
        env = {
            **os.environ,
            "EXPEDITOR_FAKE_SCENARIO": json.dumps(SCENARIO),
            "CLAUDE_CONFIG_DIR": str(root / "c"),
        }
        managed: list[float] = []
        direct: list[float] = []
        for _ in range(2):  # warm-up
            await bare(root, env)
            await executor.run(scenario_request(root, SCENARIO), marker_dir=None, caller_session_id=None)
        for _ in range(runs):
            direct.append(await bare(root, env))
            started = time.perf_counter()
            result = await executor.run(scenario_request(root, SCENARIO), marker_dir=None, caller_session_id=None)
            managed.append(time.perf_counter() - started)
            assert result.success, result.reason
        print(describe("direct launch", direct))
        print(describe("run_managed  ", managed))
        overhead = [m - d for m, d in zip(managed, direct, strict=True)]
        print(f"overhead per run: median {statistics.median(overhead) * 1000:.1f} ms (target < 50 ms)")
        print(f"containment: {containment.kind}")
        containment.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--containment", choices=("auto", "cgroup", "tree"), default="auto")
    arguments = parser.parse_args()
    anyio.run(main, arguments.runs, arguments.containment)
