"""Stale verdict latency: how long after the threshold a silent session is declared stale.

A fake agent says one thing and goes silent; the run ends as ``stale``. Latency = the run's
duration minus the threshold minus the agent's start-up (measured from its first output).
Target: < 0.5 s with the default 0.5 s poll interval.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anyio

from bench._common import bench_settings, describe, scenario_request, temp_root
from expeditor.executor import Signal, Termination
from expeditor.runs import build_executor


async def main(runs: int, threshold: float, poll: float) -> None:
    with temp_root() as root_name:
        root = Path(root_name)
        executor = build_executor(bench_settings(root, stale_threshold=threshold, poll_interval=poll))
        latencies: list[float] = []
        for _ in range(runs):
            request = scenario_request(root, {"steps": [{"assistant": "thinking"}, {"hang": True}]})
            started_wall = time.time()
            result = await executor.run(request, marker_dir=None, caller_session_id=None)
            assert result.termination is Termination.STALE, result.reason
            last = max(result.last_moved.get(signal, started_wall) for signal in (Signal.STDOUT, Signal.TRANSCRIPT))
            ended_wall = started_wall + result.duration_s
            latencies.append(ended_wall - last - threshold)
        print(describe(f"stale verdict latency beyond a {threshold:g}s threshold (poll {poll:g}s)", latencies))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=1.0)
    parser.add_argument("--poll", type=float, default=0.5)
    arguments = parser.parse_args()
    anyio.run(main, arguments.runs, arguments.threshold, arguments.poll)
