"""Launching many sessions at once: wall time until every agent runs, and what supervision costs in memory.

N fake agents are launched together (the server's keeper running, as in ``expeditor serve``). Reported:
the wall time from the first launch until every session is spawned and supervised (target ≤ 4.4 s for
200), and until every agent has logged its start (the fake agent's own start-up, ~0.1 s of CPU each,
dominates that one on 2 cores, and slows the later launches too: ``--command sleep`` launches
``/bin/sleep`` instead, to time the supervision alone),
and the PSS of the supervision processes in front of the agents (session guards under the tree
fallback, the one keeper under cgroups) per session (target < 0.5 MB), beside this supervisor's own.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anyio
import psutil

from bench._common import bench_settings, scenario_request, temp_root
from expeditor.executor import RunControl, RunRequest, choose_containment
from expeditor.executor.containment import ContainmentSetting
from expeditor.executor.spawning import GUARD
from expeditor.runs import build_executor
from expeditor.testing import read_invocation_log

WAITING = {"steps": [{"assistant": "waiting"}, {"hang": True}]}


def _supervision_pss() -> tuple[int, int]:
    """(processes, total PSS in bytes) of the guards and keepers among this process's children."""
    count, total = 0, 0
    for child in psutil.Process().children():
        try:
            if any(GUARD.name in part for part in child.cmdline()):
                total += child.memory_full_info().pss
                count += 1
        except psutil.Error:
            continue
    return count, total


def _started(log: Path) -> int:
    return sum(1 for entry in read_invocation_log(log) if entry["event"] == "launch") if log.exists() else 0


async def main(sessions: int, setting: ContainmentSetting, command: str) -> None:
    containment = choose_containment(setting)
    with temp_root() as root_name:
        root = Path(root_name)
        log = root / "agents.log"
        executor = build_executor(bench_settings(root), containment=containment)
        controls = [RunControl() for _ in range(sessions)]
        async with containment.kept(), anyio.create_task_group() as group:
            started = time.perf_counter()
            for control in controls:
                request = (
                    RunRequest(prompt="/sleep", cwd=root, argv=("/bin/sleep", "3600"))
                    if command == "sleep"
                    else scenario_request(root, WAITING, env={"EXPEDITOR_FAKE_LOG": str(log)})
                )
                group.start_soon(
                    lambda r=request, c=control: executor.run(r, marker_dir=None, caller_session_id=None, control=c)
                )
            for control in controls:
                await control.started.wait()
            spawned = time.perf_counter() - started
            while command != "sleep" and _started(log) < sessions:
                await anyio.sleep(0.01)
            elapsed = time.perf_counter() - started
            helpers, pss = _supervision_pss()
            own = psutil.Process().memory_full_info().pss
            for control in controls:
                control.cancel("bench over", grace=0.1)
    print(f"containment: {containment.kind}, {sessions} sessions of {command} launched at once")
    print(f"every session spawned and supervised after {spawned:.2f} s (target <= 4.4 s for 200)")
    if command != "sleep":
        print(f"every agent running its own code after {elapsed:.2f} s (the fake agent is a Python program)")
    print(
        f"supervision processes: {helpers}, PSS {pss / 2**20:.1f} MB in all, "
        f"{pss / sessions / 2**20:.3f} MB per session (target < 0.5 MB); this supervisor: {own / 2**20:.1f} MB"
    )
    containment.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--containment", choices=("auto", "cgroup", "tree"), default="auto")
    parser.add_argument(
        "--command",
        choices=("fake-agent", "sleep"),
        default="fake-agent",
        help="sleep: /bin/sleep as a plain command, so the agents' own start-up does not compete for the cores",
    )
    arguments = parser.parse_args()
    anyio.run(main, arguments.sessions, arguments.containment, arguments.command)
