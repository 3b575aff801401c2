"""The peer's side of bench/peer_runner.py: AutoSkillit's ``run_managed_async``, run in the peer's own interpreter.

Run as ``PEER_PYTHON bench/_peer_driver.py TASK [PARAMS.json]`` (TASK: check, overhead, kill, launch); it
prints one JSON object on stdout. It imports the standard library and, inside the tasks, the peer's
package (``autoskillit``) only. The helpers before the tasks (the direct launch, reading the fake
agent's log, the processes between a runner and its agent, their PSS, the exit watch) are standard
library only and imported by peer_runner.py too, so both runners are measured by the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ExitWatch",
    "LogTail",
    "direct_launch",
    "helpers_between",
    "kill_sample",
    "pss_kib",
    "sigterm_after",
    "wait_for_tree",
]

LONG = 600.0
"""The timeout of a run that something else ends (a cancellation)."""


# --- Shared, standard library only -------------------------------------------------------------


async def direct_launch(argv: Sequence[str], env: Mapping[str, str], cwd: str | Path) -> float:
    """Seconds to spawn ``argv``, read its stdout to EOF and wait for it: the baseline of both runners."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(env),
    )
    assert process.stdout is not None
    while await process.stdout.read(65536):
        pass
    await process.wait()
    return time.perf_counter() - started


class LogTail:
    """The fake agent's invocation log (EXPEDITOR_FAKE_LOG), read incrementally as it grows."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as stream:
                stream.seek(self._offset)
                data = stream.read()
        except FileNotFoundError:
            return self.records
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        self.records += [json.loads(line) for line in lines if line.strip()]
        return self.records

    def count(self, event: str) -> int:
        return sum(1 for record in self.poll() if record["event"] == event)


async def wait_for_tree(log: LogTail, children: int, within: float) -> list[int] | None:
    """[agent, its children...] once the agent logged its launch and ``children`` spawned children; None if late."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        records = log.poll()
        agents = [record["pid"] for record in records if record["event"] == "launch"]
        spawned = [record["pid"] for record in records if record["event"] == "spawned"]
        if agents and len(spawned) >= children:
            return [agents[0], *spawned]
        await asyncio.sleep(0.005)
    return None


def sigterm_after(log: LogTail, since_wall: float) -> float | None:
    """Seconds from ``since_wall`` to the first SIGTERM the agent logged at or after it."""
    times = [
        record["time"]
        for record in log.poll()
        if record["event"] == "signal" and record.get("signal") == "SIGTERM" and record["time"] >= since_wall
    ]
    return min(times) - since_wall if times else None


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as stream:
        stat = stream.read()
    return int(stat[stat.rindex(b")") + 2 :].split()[1])


def helpers_between(agent: int, runner: int) -> list[int] | None:
    """The processes between the runner and its agent (a guard, ``script``…); None when the agent is not below it."""
    helpers: list[int] = []
    try:
        pid = _parent(agent)
        while pid != runner:
            if pid <= 1:
                return None
            helpers.append(pid)
            pid = _parent(pid)
    except (OSError, ValueError):
        return None
    return helpers


def pss_kib(pid: int) -> int:
    """Proportional set size in KiB, from /proc/PID/smaps_rollup (what psutil's memory_full_info().pss reads)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as stream:
            for line in stream:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class ExitWatch:
    """When each of some processes exits, seen by the kernel (pidfd), not by the runner that kills them."""

    def __init__(self, pids: Sequence[int], within: float = 30.0) -> None:
        self.opened_wall = time.time()
        self.exits: dict[int, float] = {}
        self.pids = list(pids)
        self._fds: dict[int, int] = {}
        for pid in pids:
            try:
                self._fds[os.pidfd_open(pid)] = pid
            except ProcessLookupError:
                self.exits[pid] = self.opened_wall  # already gone: it cannot count as killed after a decision
        self._within = within
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        poller = select.poll()
        for fd in self._fds:
            poller.register(fd, select.POLLIN)
        pending = set(self._fds)
        deadline = time.monotonic() + self._within
        while pending and time.monotonic() < deadline:
            for fd, _ in poller.poll(100):
                self.exits[self._fds[fd]] = time.time()
                poller.unregister(fd)
                pending.discard(fd)
        for fd in self._fds:
            os.close(fd)

    def last_exit(self, timeout: float = 10.0) -> float | None:
        """Wall time the last of them exited; None if one still runs."""
        self._thread.join(timeout)
        if self._thread.is_alive() or len(self.exits) < len(self.pids):
            return None
        return max(self.exits.values())


# --- The peer ----------------------------------------------------------------------------------


def _peer() -> Any:
    from autoskillit.execution import process

    return process


class _DeadlineRecorder:
    """Stands in for ``anyio`` in the peer's process module, noting when its run timeout was armed.

    ``anyio.move_on_after(delay)`` computes its deadline when called; the wall-clock deadline is noted
    at the same instant. Everything else is the real anyio.
    """

    def __init__(self, module: Any, timeout: float) -> None:
        self._module = module
        self._timeout = timeout
        self.deadlines: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def move_on_after(self, delay: float | None, shield: bool = False) -> Any:
        scope = self._module.move_on_after(delay, shield=shield)
        if delay == self._timeout:
            self.deadlines.append(time.time() + delay)
        return scope


def _call(launch: Mapping[str, Any], pty: bool, timeout: float) -> Awaitable[Any]:
    return _peer().run_managed_async(
        list(launch["argv"]), cwd=Path(launch["cwd"]), env=dict(launch["env"]), timeout=timeout, pty_mode=pty
    )


def task_check(_params: Mapping[str, Any]) -> dict[str, Any]:
    import autoskillit

    process = _peer()
    return {
        "version": autoskillit.__version__,
        "module": process.__file__,
        "signature": ", ".join(inspect.signature(process.run_managed_async).parameters),
        "python": sys.version.split()[0],
    }


async def task_overhead(params: Mapping[str, Any]) -> dict[str, Any]:
    """Pairs of (direct launch, run_managed_async) of the same command; the first ``warmup`` pairs dropped."""
    launches = params["launches"]
    direct: list[float] = []
    managed: list[float] = []
    outcomes: list[str] = []
    for index in range(0, len(launches), 2):
        bare = await direct_launch(launches[index]["argv"], launches[index]["env"], launches[index]["cwd"])
        started = time.perf_counter()
        result = await _call(launches[index + 1], params["pty"], LONG)
        elapsed = time.perf_counter() - started
        if index < 2 * params["warmup"]:
            continue
        outcomes.append(f"{result.termination}/{result.returncode}")
        if result.returncode == 0:  # a failed run is no sample: it did not do the same work
            direct.append(bare)
            managed.append(elapsed)
    return {"direct": direct, "managed": managed, "outcomes": outcomes}


async def task_kill(params: Mapping[str, Any]) -> dict[str, Any]:
    """For each run: the tree is whole, then the timeout fires (``how`` = timeout) or the caller cancels the task."""
    process = _peer()
    recorder = _DeadlineRecorder(process.anyio, params["timeout"])
    process.anyio = recorder
    samples: list[dict[str, Any]] = []
    try:
        for launch in params["runs"]:
            samples.append(await _kill_once(launch, params, recorder))
    finally:
        process.anyio = recorder._module
    return {"samples": samples}


async def _kill_once(
    launch: Mapping[str, Any], params: Mapping[str, Any], recorder: _DeadlineRecorder
) -> dict[str, Any]:
    how = params["how"]
    log = LogTail(launch["env"]["EXPEDITOR_FAKE_LOG"])
    recorder.deadlines.clear()
    run = asyncio.ensure_future(_call(launch, params["pty"], params["timeout"] if how == "timeout" else LONG))
    tree = await wait_for_tree(log, params["children"], within=LONG)
    assert tree is not None
    helpers = helpers_between(tree[0], os.getpid()) or []
    watch = ExitWatch([*tree, *helpers])
    decided = time.time()
    if how == "cancel":
        run.cancel()
    termination = "cancelled"
    with contextlib.suppress(asyncio.CancelledError):
        termination = str((await run).termination)
    returned = time.time()
    if how == "timeout":
        decided = recorder.deadlines[0]
    return kill_sample(log, watch, decided, returned, termination)


def kill_sample(log: LogTail, watch: ExitWatch, decided: float, returned: float, termination: str) -> dict[str, Any]:
    """One kill run's figures, from the decision instant (wall clock, seconds)."""
    last = watch.last_exit()
    return {
        "first_sigterm": sigterm_after(log, decided),
        "last_exit": None if last is None else last - decided,
        "returned": returned - decided,
        "whole_before_decision": watch.opened_wall <= decided,
        "processes": len(watch.pids),
        "termination": termination,
    }


async def task_launch(params: Mapping[str, Any]) -> dict[str, Any]:
    """Start every launch at once; time until each agent logged its launch; the helpers' PSS; then cancel them."""
    launches = params["launches"]
    log = LogTail(params["log"])
    started, cpu = time.perf_counter(), time.process_time()
    runs = [asyncio.ensure_future(_call(launch, params["pty"], LONG)) for launch in launches]
    while log.count("launch") < len(launches):
        if any(run.done() for run in runs):
            raise RuntimeError("a run ended before every agent had started")
        await asyncio.sleep(0.005)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    figures = helper_figures(log, os.getpid())
    # Not a figure: the peer ends a cancelled run with a blocking kill, one run after the other, and
    # under pty_mode each waits ~2 s for ``script``. The agents and their helpers are killed first.
    for agent in (record["pid"] for record in log.poll() if record["event"] == "launch"):
        for pid in [agent, *(helpers_between(agent, os.getpid()) or [])]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for run in runs:
        run.cancel()
    await asyncio.gather(*runs, return_exceptions=True)
    return {"wall": wall, "cpu": cpu, **figures}


def helper_figures(log: LogTail, runner: int) -> dict[str, Any]:
    """How many processes stand between the runner and its agents, and their total PSS (KiB)."""
    agents = [record["pid"] for record in log.poll() if record["event"] == "launch"]
    helpers: list[int] = []
    unplaced = 0
    for agent in agents:
        found = helpers_between(agent, runner)
        if found is None:
            unplaced += 1
        else:
            helpers += found
    return {
        "sessions": len(agents),
        "helpers": len(helpers),
        "helper_pss_kib": sum(pss_kib(pid) for pid in helpers),
        "unplaced": unplaced,
    }


TASKS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "check": task_check,
    "overhead": task_overhead,
    "kill": task_kill,
    "launch": task_launch,
}


def main(argv: list[str]) -> None:
    task = TASKS[argv[0]]
    params = json.loads(Path(argv[1]).read_text()) if len(argv) > 1 else {}
    outcome = task(params)
    if inspect.isawaitable(outcome):
        outcome = asyncio.run(outcome)  # pyright: ignore[reportArgumentType]
    print(json.dumps(outcome))


if __name__ == "__main__":
    main(sys.argv[1:])
