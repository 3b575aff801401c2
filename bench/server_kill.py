"""Stress the death of the supervisor itself: servers SIGKILLed at random instants while launching sessions.

Each "server" is a process that opens a runtime and launches its share of sessions of random shapes
(clean-environment daemons included under cgroups) as fast as it can, then waits. Each is killed
with SIGKILL at a random instant in its first 2.5 s, half of them with their whole process group, as
a process manager stops a stdio server. Then one runtime opens on the same home, as the next server
start would, and reaps. Reported: survivors (logged agents and children still alive), session
groups, markers and registry entries left. Target: 0 of each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import psutil

from bench.stress_kill import FAKE_AGENT, _alive, _logged_pids, random_scenario  # pyright: ignore[reportPrivateUsage]
from expeditor.config import Settings, load_settings
from expeditor.executor import RunRequest, cgroups
from expeditor.monitor import execution_marker
from expeditor.runs import CallerContext, open_runtime

__all__ = ["server_kill"]


def _settings(root: Path, containment: str) -> Settings:
    return load_settings(
        home=root / "home",
        claude_command=FAKE_AGENT.replace("python", sys.executable, 1),
        claude_config_dir=root / "claude",
        allowed_roots=(root,),
        kill_grace=0.3,
        children_interval=0.5,
        containment=containment,
    )


async def serve_sessions(root: Path, sessions: int, seed: int, containment: str) -> None:
    """One doomed server: launch ``sessions`` random sessions at once, each under a caller's marker, and wait."""
    rng = random.Random(seed)
    settings = _settings(root, containment)
    log = root / "agents.log"
    async with open_runtime(settings) as runtime, anyio.create_task_group() as group:
        contained = runtime.executor.containment is not None and runtime.executor.containment.kind == "cgroup"
        for index in range(sessions):
            scenario = random_scenario(rng, clean_env=contained)
            request = RunRequest(
                prompt="/stress",
                cwd=root,
                env={"EXPEDITOR_FAKE_SCENARIO": json.dumps(scenario), "EXPEDITOR_FAKE_LOG": str(log)},
            )

            async def one(request: RunRequest = request, caller: str = f"caller-{seed}-{index}") -> None:
                async with execution_marker(settings.markers_path, "run-skill", caller, heartbeat_interval=0.2):
                    await runtime.supervisor.run(request, CallerContext(caller, None))

            group.start_soon(one)


async def server_kill(servers: int, sessions_each: int, seed: int, containment: str = "auto") -> dict[str, Any]:
    rng = random.Random(seed)
    repository = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="expeditor-server-kill-") as name:
        root = Path(await anyio.Path(name).resolve())
        env = {**os.environ, "PYTHONPATH": str(repository)}
        owners: list[int] = []
        for index in range(servers):
            argv = [sys.executable, "-m", "bench.server_kill", "--serve", str(root), str(sessions_each)]
            server = await anyio.open_process(
                [*argv, str(seed * 1000 + index), containment],
                cwd=repository,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            owners.append(server.pid)
            # From its interpreter's start-up to its sessions at work: every instant is a candidate.
            await anyio.sleep(rng.uniform(0.2, 2.5))
            if rng.random() < 0.5:
                server.kill()
            else:
                os.killpg(server.pid, signal.SIGKILL)
            await server.wait()
        # The next server start: it reaps what every dead server left.
        settings = _settings(root, containment)
        async with open_runtime(settings):
            pass
        await anyio.sleep(0.5)  # the guards' kills land; init reaps what it adopted
        pids = await anyio.to_thread.run_sync(_logged_pids, root / "agents.log")
        survivors = [pid for pid in pids if _alive(pid)]
        for pid in survivors:
            psutil.Process(pid).kill()
        parent = cgroups.own_group()
        groups = [
            group
            for group in (parent.glob(f"{cgroups.SERVER_GROUP_PREFIX}*") if parent is not None else ())
            if (owner := cgroups.parse_server_group_name(group.name)) is not None and owner[0] in owners
        ]
        markers = list(settings.markers_path.glob("*.marker")) if settings.markers_path.exists() else []
        entries = list(settings.sessions_dir.glob("*.json")) if settings.sessions_dir.exists() else []
        return {
            "servers": servers,
            "sessions": servers * sessions_each,
            "processes": len(pids),
            "survivors": len(survivors),
            "groups_left": len(groups),
            "markers_left": len(markers),
            "registry_left": len(entries),
        }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        root, sessions, seed, containment = sys.argv[2:6]
        anyio.run(serve_sessions, Path(root), int(sessions), int(seed), containment)
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=10, help="sessions each server launches")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--containment", choices=("auto", "cgroup", "tree"), default="auto")
    arguments = parser.parse_args()
    started = time.perf_counter()
    figures = anyio.run(server_kill, arguments.servers, arguments.sessions, arguments.seed, arguments.containment)
    print(
        f"{figures['servers']} servers SIGKILLed at random instants while launching {figures['sessions']} sessions "
        f"({figures['processes']} processes) in {time.perf_counter() - started:.1f}s: {figures['survivors']} "
        f"survivors, {figures['groups_left']} session groups, {figures['markers_left']} markers, "
        f"{figures['registry_left']} registry entries left (target 0, 0, 0, 0)"
    )


if __name__ == "__main__":
    main()
