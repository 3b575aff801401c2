"""Supervisor CPU with many concurrent idle sessions.

N fake agents start, say one thing and go silent; the supervisor watches them all (transcript
polls every 0.5 s, child sampling every 5 s, the production defaults) for a measuring window.
Reported: this process's CPU time over the window, as a percentage of one core.
Target: < 0.5 % of one core at 50 sessions; the figure at 200 is reported too, and with
``--host-processes 1000`` (that many unrelated ``sleep`` processes on the host, which a supervisor that
walks the process table pays for and one that reads its sessions' groups does not).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import anyio
import psutil

from bench._common import bench_settings, scenario_request, temp_root
from expeditor.executor import RunControl, SessionContainment, choose_containment
from expeditor.executor.containment import ContainmentSetting
from expeditor.runs import build_executor


async def measure(sessions: int, window: float, containment: SessionContainment) -> float:
    with temp_root() as root_name:
        root = Path(root_name)
        executor = build_executor(bench_settings(root), containment=containment)
        controls = [RunControl() for _ in range(sessions)]
        me = psutil.Process()
        usage = 0.0
        async with anyio.create_task_group() as group:
            for control in controls:
                request = scenario_request(root, {"steps": [{"assistant": "waiting"}, {"hang": True}]})
                group.start_soon(
                    lambda r=request, c=control: executor.run(r, marker_dir=None, caller_session_id=None, control=c)
                )
            for control in controls:
                await control.started.wait()
            await anyio.sleep(3)  # let every agent finish starting up
            before = me.cpu_times()
            started = time.perf_counter()
            await anyio.sleep(window)
            after = me.cpu_times()
            elapsed = time.perf_counter() - started
            usage = ((after.user - before.user) + (after.system - before.system)) / elapsed
            for control in controls:
                control.cancel("bench over", grace=0.1)
        return usage


def _unrelated_processes(count: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(["/bin/sleep", "3600"], stdin=subprocess.DEVNULL, start_new_session=True) for _ in range(count)
    ]


async def main(counts: list[int], window: float, setting: ContainmentSetting, host_processes: int) -> None:
    containment = choose_containment(setting)
    unrelated = _unrelated_processes(host_processes)
    try:
        for count in counts:
            cores = await measure(count, window, containment)
            print(
                f"{count} idle sessions ({containment.kind}), {host_processes} unrelated processes on the host, "
                f"{window:g}s window: supervisor CPU {cores * 100:.2f} % of one core"
            )
    finally:
        for process in unrelated:
            process.kill()
            process.wait()
        containment.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--containment", choices=("auto", "cgroup", "tree"), default="auto")
    parser.add_argument("--host-processes", type=int, default=0, help="unrelated processes to start on the host first")
    arguments = parser.parse_args()
    anyio.run(main, arguments.sessions, arguments.window, arguments.containment, arguments.host_processes)
