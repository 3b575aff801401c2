"""End to end through the MCP server: run_skill and dispatch against a direct launch of the same agent.

An in-memory MCP client calls the real server (lifespan, store, supervisor, markers, progress).
Each pair launches the fake agent directly (spawn, read stdout to EOF, wait), then through
``run_skill``, then dispatches a fresh job of an agent recipe (claim, orchestrator prompt,
dispatch marker, run record, fenced end), and finally repeats that dispatch (the short-circuit).
The overhead is each path's time minus the direct launch of the same pair.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from bench._common import bench_settings, describe, temp_root
from bench.run_overhead import bare
from expeditor.server.app import build_server

SCENARIO = {"steps": [{"assistant": "done"}, {"result": {}}]}


def _check(result: Any) -> dict[str, Any]:
    assert not result.is_error, result
    content = result.structured_content
    assert content is not None
    return content


async def main(runs: int, measure_loc: bool) -> None:
    with temp_root() as root_name:
        root = Path(root_name)
        settings = bench_settings(root, measure_loc=measure_loc)
        env = {**os.environ, "EXPEDITOR_FAKE_SCENARIO": json.dumps(SCENARIO), "CLAUDE_CONFIG_DIR": str(root / "claude")}
        server_env = {**env, "CLAUDE_CODE_SESSION_ID": str(uuid.uuid4())}
        direct: list[float] = []
        run_skill: list[float] = []
        dispatch: list[float] = []
        repeat: list[float] = []
        async with Client(build_server(settings, env=server_env)) as client:

            async def timed(tool: str, arguments: dict[str, Any]) -> tuple[float, dict[str, Any]]:
                started = time.perf_counter()
                content = _check(await client.call_tool(tool, arguments))
                return time.perf_counter() - started, content

            for index in range(runs + 2):
                job = {"campaign": "bench", "name": f"job-{index}", "recipe": "diagnose", "inputs": {"problem": "p"}}
                direct_s = await bare(root, env)
                skill_s, skill = await timed("run_skill", {"skill_command": "/bench", "cwd": str(root)})
                dispatch_s, first = await timed("dispatch", {**job, "cwd": str(root)})
                repeat_s, again = await timed("dispatch", {**job, "cwd": str(root)})
                assert skill["success"], skill
                assert first["status"] == "success", first
                assert again["short_circuited"], again
                if index >= 2:  # the first two pairs warm up imports and the store
                    direct.append(direct_s)
                    run_skill.append(skill_s)
                    dispatch.append(dispatch_s)
                    repeat.append(repeat_s)
        print(describe("direct launch of the fake agent ", direct))
        print(describe("run_skill through the MCP server", run_skill))
        print(describe("dispatch of a new job            ", dispatch))
        print(describe("repeat dispatch (short-circuit)  ", repeat))
        for label, samples in (("run_skill", run_skill), ("dispatch", dispatch)):
            overhead = [(path - bare_s) * 1000 for path, bare_s in zip(samples, direct, strict=True)]
            print(f"{label} overhead per call: median {statistics.median(overhead):.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-loc", action="store_true", help="skip the git lines-changed measurement per run")
    arguments = parser.parse_args()
    anyio.run(main, arguments.runs, not arguments.no_loc)
