"""Our runner side by side with a peer's: AutoSkillit 0.9.0's ``run_managed_async``, on this machine.

Same commands, same conditions, both measured by the same code (bench/_peer_driver.py's helpers):

1. overhead of a short run over a direct launch of the same command (spawn, read stdout to EOF, wait),
   for ``/bin/true`` and for the fake agent, as the median of pairs;
2. kill of a tree of 3 processes that obeys SIGTERM (the fake agent and 2 children): decision → first
   SIGTERM (the agent's own log) and decision → last process exited (pidfd, seen by the kernel), and
   → the run returned. The decision is a short timeout firing (the peer's own way to end a hung run:
   its deadline is noted when armed) and, second, the caller cancelling the task that awaits the run;
3. wall time to launch 200 sessions at once (until 200 agents logged their launch), and the PSS of the
   processes each runner puts between itself and an agent, per session.

The peer runs in its own interpreter (``--peer-python``, a venv with AutoSkillit installed), driven by
bench/_peer_driver.py; ours runs in this process. Each command line (argv, environment, working
directory) is prepared by our executor and handed to both runners; neither figure counts preparing it.
``peer (pty)`` is the peer with ``pty_mode=True``, how its headless sessions launch Claude Code (under
``script``). Run: ``.venv/bin/python -m bench.peer_runner --peer-python /tmp/autoskillit-venv/bin/python``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio

from bench._common import bench_settings, scenario_request, temp_root
from bench._peer_driver import (
    LONG,
    ExitWatch,
    LogTail,
    direct_launch,
    helper_figures,
    helpers_between,
    kill_sample,
    pss_kib,
    wait_for_tree,
)
from expeditor.executor import ClaudeCodeExecutor, RunRequest, choose_containment
from expeditor.executor import runner as runner_module
from expeditor.executor.containment import ContainmentSetting, SessionContainment
from expeditor.executor.runner import LaunchSpec
from expeditor.runs import build_executor

DRIVER = Path(__file__).with_name("_peer_driver.py")
SHORT = {"steps": [{"assistant": "done"}, {"result": {}}]}
CHILDREN = 2
HANG = {"steps": [{"hang": True}]}
PEERS = (("peer", False), ("peer (pty)", True))


class PeerUnavailable(Exception):
    """The peer's interpreter is missing, or cannot import the peer."""


def peer(python: str, task: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one driver task in the peer's interpreter and return its JSON answer."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="peer-params-", delete=False) as stream:
        json.dump(params or {}, stream)
    try:
        completed = subprocess.run(
            [python, str(DRIVER), task, stream.name], capture_output=True, text=True, check=False, timeout=1800
        )
    finally:
        os.unlink(stream.name)
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise PeerUnavailable(f"the peer's driver failed ({task}, exit {completed.returncode}): {last}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def check_peer(python: str | None) -> dict[str, Any]:
    if python is None:
        raise PeerUnavailable("--peer-python is required: the python of a venv with AutoSkillit 0.9.0 installed")
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise PeerUnavailable(f"--peer-python {python}: no such executable")
    try:
        return peer(python, "check")
    except PeerUnavailable as exc:
        raise PeerUnavailable(f"the peer is not importable with {python}: {exc}") from None


def wire(spec: LaunchSpec) -> dict[str, Any]:
    return {"argv": list(spec.argv), "env": dict(spec.env), "cwd": str(spec.cwd)}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def spread(samples: list[float]) -> str:
    ordered = sorted(samples)
    return f"median {ms(statistics.median(ordered))} ms ({ms(ordered[0])}-{ms(ordered[-1])}, n={len(ordered)})"


class Bench:
    """Our executor, and the launches it prepares for both runners."""

    def __init__(self, root: Path, containment: SessionContainment, peer_python: str) -> None:
        self.root = root
        self.containment = containment
        self.peer_python = peer_python
        self.executor: ClaudeCodeExecutor = build_executor(bench_settings(root), containment=containment)
        self.ours = f"ours ({containment.kind})"
        self._logs = 0

    def log(self) -> Path:
        self._logs += 1
        return self.root / f"agents-{self._logs}.log"

    def request(self, command: str, **fields: Any) -> RunRequest:
        if command == "true":
            return RunRequest(prompt="/true", cwd=self.root, argv=("/bin/true",), **fields)
        scenario = fields.pop("scenario", SHORT)
        return scenario_request(self.root, scenario, **fields)

    def launch(self, command: str, **fields: Any) -> tuple[LaunchSpec, Any]:
        return self.executor.prepare(self.request(command, **fields), marker_dir=None, caller_session_id=None)

    # 1. Overhead ------------------------------------------------------------------------------

    async def overhead(self, command: str, runs: int, chunks: int) -> None:
        """Pairs in chunks, the runners taking turns, so that load that comes and goes hits all of them."""
        ours: dict[str, list[float]] = {"direct": [], "managed": []}
        peers: dict[str, dict[str, list[float]]] = {name: {"direct": [], "managed": []} for name, _ in PEERS}
        outcomes: Counter[str] = Counter()
        for size in _chunks(runs, chunks):
            await self._ours_pairs(command, size, ours, outcomes)
            for name, pty in PEERS:
                launches = [wire(self.launch(command)[0]) for _ in range(2 * (size + 1))]
                answer = peer(self.peer_python, "overhead", {"launches": launches, "pty": pty, "warmup": 1})
                peers[name]["direct"] += answer["direct"]
                peers[name]["managed"] += answer["managed"]
                outcomes.update(f"{name} {outcome}" for outcome in answer["outcomes"])
        label = "/bin/true" if command == "true" else "fake agent"
        print(f"  {label}:")
        for name, samples in ((self.ours, ours), *peers.items()):
            overhead = [m - d for m, d in zip(samples["managed"], samples["direct"], strict=True)]
            print(
                f"    {name:<16} overhead median {ms(statistics.median(overhead))} ms"
                f"  (direct median {ms(statistics.median(samples['direct']))} ms,"
                f" runner median {ms(statistics.median(samples['managed']))} ms, {len(overhead)} pairs)"
            )
        print(f"    runs (failed runs are no sample): {', '.join(f'{k} x{n}' for k, n in sorted(outcomes.items()))}")

    async def _ours_pairs(self, command: str, size: int, into: dict[str, list[float]], outcomes: Counter[str]) -> None:
        for index in range(size + 1):  # the first pair warms up
            spec, _ = self.launch(command)
            direct = await direct_launch(spec.argv, spec.env, spec.cwd)
            spec, policy = self.launch(command)
            started = time.perf_counter()
            result = await self.executor.run_prepared(spec, policy)
            managed = time.perf_counter() - started
            if not index:
                continue
            why = "" if result.success else f" ({result.reason})"
            outcomes[f"ours {result.termination}/{result.exit_code}{why}"] += 1
            if result.success:
                into["direct"].append(direct)
                into["managed"].append(managed)

    # 2. Kill ----------------------------------------------------------------------------------

    async def kill(self, how: str, runs: int, run_timeout: float) -> None:
        scenario = {"steps": [{"spawn": {"sleep": 60, "count": CHILDREN}}, {"hang": True}]}

        def spec_for() -> tuple[LaunchSpec, Any]:
            env = {"EXPEDITOR_FAKE_LOG": str(self.log())}
            return self.launch("agent", scenario=scenario, env=env, timeout=run_timeout if how == "timeout" else LONG)

        rows: dict[str, list[dict[str, Any]]] = {self.ours: []}
        for name, pty in PEERS:
            launches = [wire(spec_for()[0]) for _ in range(runs)]
            params = {"runs": launches, "pty": pty, "how": how, "timeout": run_timeout, "children": CHILDREN}
            rows[name] = peer(self.peer_python, "kill", params)["samples"]
        for _ in range(runs):
            rows[self.ours].append(await self._ours_kill_once(how, *spec_for()))
        title = (
            f"a {run_timeout:g} s timeout fires" if how == "timeout" else "the caller cancels the task awaiting the run"
        )
        print(f"  decision: {title}")
        for name, samples in rows.items():
            valid = [sample for sample in samples if sample["whole_before_decision"]]
            late = len(samples) - len(valid)
            first = [s["first_sigterm"] for s in valid if s["first_sigterm"] is not None]
            last = [s["last_exit"] for s in valid if s["last_exit"] is not None]
            survivors = sum(1 for s in valid if s["last_exit"] is None)
            processes = sorted({s["processes"] for s in valid})
            print(f"    {name:<16} -> first SIGTERM  {spread(first) if first else 'none logged'}")
            print(f"    {'':<16} -> last exit      {spread(last) if last else 'none'}")
            print(f"    {'':<16} -> run returned   {spread([s['returned'] for s in valid])}")
            terminations = ", ".join(sorted({s["termination"] for s in valid}))
            print(
                f"    {'':<16}    watched processes {processes}, survivors {survivors}, "
                f"tree not whole in time {late}, ended as {terminations}"
            )

    async def _ours_kill_once(self, how: str, spec: LaunchSpec, policy: Any) -> dict[str, Any]:
        log = LogTail(spec.env["EXPEDITOR_FAKE_LOG"])
        deadlines: list[float] = []
        original = runner_module._watch_deadline  # pyright: ignore[reportPrivateUsage]

        async def noting_deadline(decision: Any, run_policy: Any) -> None:
            deadlines.append(time.time() + run_policy.timeout)  # anyio.sleep(timeout) is armed right after
            await original(decision, run_policy)

        runner_module._watch_deadline = noting_deadline  # pyright: ignore[reportPrivateUsage]
        termination = "cancelled"
        scope = anyio.CancelScope()
        try:
            async with anyio.create_task_group() as group:

                async def run() -> None:
                    nonlocal termination
                    with scope:
                        termination = str((await self.executor.run_prepared(spec, policy)).termination)

                group.start_soon(run)
                tree = await wait_for_tree(log, CHILDREN, within=LONG)
                assert tree is not None
                watch = ExitWatch([*tree, *(helpers_between(tree[0], os.getpid()) or [])])
                decided = time.time()
                if how == "cancel":
                    scope.cancel()
            returned = time.time()
        finally:
            runner_module._watch_deadline = original  # pyright: ignore[reportPrivateUsage]
        if how == "timeout":
            decided = deadlines[0]
        return kill_sample(log, watch, decided, returned, termination)

    # 3. 200 sessions at once ------------------------------------------------------------------

    async def launch_many(self, sessions: int) -> None:
        rows: dict[str, dict[str, Any]] = {}
        keeper_kib = await self._ours_launch_many(sessions, rows)
        for name, pty in PEERS:
            log = self.log()
            env = {"EXPEDITOR_FAKE_LOG": str(log)}
            launches = [wire(self.launch("agent", scenario=HANG, env=env)[0]) for _ in range(sessions)]
            rows[name] = peer(self.peer_python, "launch", {"launches": launches, "pty": pty, "log": str(log)})
        for name, row in rows.items():
            per_session = row["helper_pss_kib"] / row["sessions"] / 1024
            print(
                f"    {name:<16} all {row['sessions']} agents started in {row['wall']:.2f} s"
                f" (the runner's process used {row['cpu']:.2f} s of CPU meanwhile);"
                f" {row['helpers']} helper processes in front of them, PSS {per_session:.2f} MiB per session"
                f" (not below the runner: {row['unplaced']})"
            )
        if keeper_kib is not None:
            print(f"    {'':<16} plus one keeper per server (not per session): PSS {keeper_kib / 1024:.2f} MiB")

    async def _ours_launch_many(self, sessions: int, rows: dict[str, dict[str, Any]]) -> int | None:
        log = LogTail(self.log())
        env = {"EXPEDITOR_FAKE_LOG": str(log.path)}
        specs = [self.launch("agent", scenario=HANG, env=env) for _ in range(sessions)]
        keeper_kib: int | None = None
        async with self.containment.kept():
            keeper_kib = _keeper_pss()
            scopes = [anyio.CancelScope() for _ in specs]
            started, cpu = time.perf_counter(), time.process_time()
            async with anyio.create_task_group() as group:
                for (spec, policy), scope in zip(specs, scopes, strict=True):
                    group.start_soon(_scoped, scope, self.executor.run_prepared, spec, policy)
                while log.count("launch") < sessions:
                    await anyio.sleep(0.005)
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu
                figures = helper_figures(log, os.getpid())
                for scope in scopes:
                    scope.cancel()
            rows[self.ours] = {"wall": wall, "cpu": cpu, **figures}
        return keeper_kib


async def _scoped(scope: anyio.CancelScope, call: Callable[..., Any], *args: Any) -> None:
    with scope:
        await call(*args)


def _keeper_pss() -> int | None:
    import psutil

    for child in psutil.Process().children():
        try:
            if "--keeper" in child.cmdline():
                return pss_kib(child.pid)
        except psutil.Error:
            continue
    return None


def orphan_reap_ms() -> float | None:
    """How long an orphan's zombie waits for its new parent (PID 1 here) to reap it: psutil's wait waits for that."""
    started = subprocess.run(
        ["/bin/sh", "-c", "sleep 0.05 & echo $!"], capture_output=True, text=True, check=True
    ).stdout
    pid, zombie_since = int(started), None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stream:
                state = stream.read().rsplit(b")", 1)[1].split()[0]
        except FileNotFoundError:
            return None if zombie_since is None else (time.monotonic() - zombie_since) * 1000
        if state == b"Z" and zombie_since is None:
            zombie_since = time.monotonic()
        time.sleep(0.0005)
    return None


def _chunks(total: int, parts: int) -> Iterator[int]:
    parts = max(1, min(parts, total))
    for index in range(parts):
        yield total // parts + (1 if index < total % parts else 0)


async def main(arguments: argparse.Namespace, peer_info: dict[str, Any]) -> None:
    containment_setting: ContainmentSetting = arguments.containment
    containment = choose_containment(containment_setting)
    with temp_root() as root_name:
        bench = Bench(Path(root_name), containment, arguments.peer_python)
        print(
            f"machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at start"
        )
        print(f"ours: expeditor, Python {platform.python_version()}, {containment.kind} ({containment.reason})")
        print(
            f"peer: autoskillit {peer_info['version']}, Python {peer_info['python']}, "
            f"run_managed_async({peer_info['signature']})"
        )
        print(f"1. overhead of a short run over a direct launch of the same command ({arguments.runs} pairs)")
        await bench.overhead("true", arguments.runs, arguments.chunks)
        await bench.overhead("agent", arguments.runs, arguments.chunks)
        print(f"2. kill, a tree of {CHILDREN + 1} processes obeying SIGTERM ({arguments.kill_runs} runs each)")
        reap = orphan_reap_ms()
        print(
            "  (last exit: the kernel saw the last of the agent, its children and any helper exit; run returned:"
            f" the runner's call returned. An orphan's zombie waits {'?' if reap is None else f'{reap:.0f}'} ms"
            " here for PID 1 to reap it)"
        )
        await bench.kill("timeout", arguments.kill_runs, arguments.timeout)
        await bench.kill("cancel", arguments.kill_runs, arguments.timeout)
        print(f"3. {arguments.sessions} sessions launched at once (fake agents that hang)")
        await bench.launch_many(arguments.sessions)
        print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")
    containment.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", help="the python of a venv with AutoSkillit 0.9.0 installed")
    parser.add_argument("--runs", type=int, default=20, help="overhead pairs per runner and command")
    parser.add_argument("--chunks", type=int, default=4, help="the runners take turns this many times")
    parser.add_argument("--kill-runs", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=2.5, help="the run timeout that decides the kill (s)")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--containment", choices=("auto", "cgroup", "tree"), default="auto")
    arguments = parser.parse_args()
    try:
        info = check_peer(arguments.peer_python)
    except PeerUnavailable as exc:
        sys.exit(f"peer_runner: {exc}")
    anyio.run(main, arguments, info)
