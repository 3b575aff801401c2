"""run_managed overhead: the full executor (spawn, parse, watch, kill sweep) against a bare launch.

Both sides run exactly the same command: the bare launch takes the argv, environment and working
directory the executor prepared for the same request (the fake agent then does the same work:
transcript, plugin directory, settings), spawns it with anyio, reads stdout to EOF and waits.
Target: < 10 ms per run. ``--command true`` runs ``/bin/true`` as a plain command instead of the fake
agent: nothing but the supervision's own cost, without the fake agent's run-to-run noise (a Python
process of 50-250 ms).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path

import anyio

from bench._common import bench_settings, describe, scenario_request, temp_root
from expeditor.executor import RunRequest, choose_containment
from expeditor.executor.containment import ContainmentSetting
from expeditor.executor.runner import LaunchSpec
from expeditor.runs import build_executor

SCENARIO = {"steps": [{"assistant": "done"}, {"result": {}}]}


async def bare(spec: LaunchSpec) -> float:
    started = time.perf_counter()
    process = await anyio.open_process(
        list(spec.argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=spec.cwd,
        env=dict(spec.env),
    )
    async with process:
        assert process.stdout is not None
        async for _ in process.stdout:
            pass
        await process.wait()
    return time.perf_counter() - started


def request_for(root: Path, command: str) -> RunRequest:
    if command == "true":
        return RunRequest(prompt="/true", cwd=root, argv=("/bin/true",))
    return scenario_request(root, SCENARIO)


async def main(runs: int, containment_setting: ContainmentSetting, command: str) -> None:
    with temp_root() as root_name:
        root = Path(root_name)
        settings = bench_settings(root)
        containment = choose_containment(containment_setting)
        executor = build_executor(settings, containment=containment)

        def same_command() -> LaunchSpec:
            spec, _ = executor.prepare(request_for(root, command), marker_dir=None, caller_session_id=None)
            return spec

        managed: list[float] = []
        direct: list[float] = []
        for _ in range(2):  # warm-up
            await bare(same_command())
            await executor.run(request_for(root, command), marker_dir=None, caller_session_id=None)
        for _ in range(runs):
            direct.append(await bare(same_command()))
            started = time.perf_counter()
            result = await executor.run(request_for(root, command), marker_dir=None, caller_session_id=None)
            managed.append(time.perf_counter() - started)
            assert result.success, result.reason
        print(f"containment: {containment.kind}, command: {command}")
        print(describe("direct launch", direct))
        print(describe("run_managed  ", managed))
        overhead = [m - d for m, d in zip(managed, direct, strict=True)]
        print(f"overhead per run: median {statistics.median(overhead) * 1000:.1f} ms (target < 10 ms)")
        containment.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--containment", choices=("auto", "cgroup", "tree"), default="auto")
    parser.add_argument("--command", choices=("fake-agent", "true"), default="fake-agent")
    arguments = parser.parse_args()
    anyio.run(main, arguments.runs, arguments.containment, arguments.command)
