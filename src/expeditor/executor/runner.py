"""The managed subprocess runner: spawn one session, race everything that can end it, kill its tree.

The race (one task group): the process exits; a ``result`` event arrives (then the process
gets ``result_exit_grace`` to exit on its own); the wall-clock timeout; a watcher's verdict;
``RunControl.cancel``. The first decisive event wins. Then, whatever won, the session's whole
tree is terminated (a completed session's leftovers included) while its pipes keep draining,
and the outcome is returned. Cancellation from outside runs the same shielded ending, stores
the outcome on the ``RunControl`` and re-raises.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import anyio.lowlevel
import psutil

from expeditor.config import RunPolicy
from expeditor.executor import cgroups
from expeditor.executor.containment import SessionContainment, end_group, end_session_group
from expeditor.executor.control import Decision, ManagedOutcome, RunControl
from expeditor.executor.launch_files import LaunchFile, remove_launch_files, write_launch_files
from expeditor.executor.models import DecidedBy, KilledProcess, SessionKind, Termination
from expeditor.executor.pipes import SessionPipes
from expeditor.executor.process_tree import snapshot_targets, terminate
from expeditor.executor.registration import register
from expeditor.executor.registry import SessionRegistry
from expeditor.executor.session import LiveSession, SignalClock, Verdict, Watcher
from expeditor.executor.spawning import (
    GUARD,
    OWN_CHILDREN,
    guarded,
    joining,
    resolve_executable,
    use_pidfd_exit_events,
)
from expeditor.executor.stream import StreamState

__all__ = ["OWN_CHILDREN", "LaunchSpec", "ManagedOutcome", "RunControl", "run_managed"]

logger = logging.getLogger(__name__)

_REAP_TIMEOUT = 2.0


_CONFIRMATION_SWEEPS = 3


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one session process."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    session_id: str
    kind: SessionKind = SessionKind.SKILL
    transcript_path: Path | None = None
    caller_session_id: str | None = None
    marker_dir: Path | None = None
    reports_result: bool = True
    """False for a plain command: its exit is its outcome, and its stdout is kept as its result text."""
    files: tuple[LaunchFile, ...] = ()
    """Files the command reads (its MCP config): written before it starts, removed when it ends."""


def _file_size(path: Path | None) -> int:
    if path is None:
        return 0
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _launch_failed(spec: LaunchSpec, reason: str) -> ManagedOutcome:
    return _not_started(spec, Verdict(Termination.LAUNCH_FAILED, DecidedBy.EXIT, reason))


def _not_started(spec: LaunchSpec, verdict: Verdict) -> ManagedOutcome:
    return ManagedOutcome(
        verdict=verdict,
        exit_code=None,
        stream=StreamState(),
        stderr_tail="",
        duration_s=0.0,
        transcript_offset=_file_size(spec.transcript_path),
    )


async def run_managed(
    spec: LaunchSpec,
    policy: RunPolicy,
    *,
    watchers: Sequence[Watcher] = (),
    registry: SessionRegistry | None = None,
    control: RunControl | None = None,
    containment: SessionContainment | None = None,
) -> ManagedOutcome:
    """Run one session to its end and return what happened. Never leaves a process behind, nor its launch files.

    With a cgroup ``containment`` the session gets its own control group, which the agent's process
    joins before it runs any code; its end is then ``cgroup.kill`` of that group.
    """
    try:
        write_launch_files(spec.files)
    except OSError as exc:
        return _launch_failed(spec, f"could not write its launch files: {exc.strerror or exc} ({exc.filename})")
    try:
        return await _run_managed(
            spec, policy, watchers=watchers, registry=registry, control=control, containment=containment
        )
    finally:
        remove_launch_files(spec.files)


async def _run_managed(
    spec: LaunchSpec,
    policy: RunPolicy,
    *,
    watchers: Sequence[Watcher],
    registry: SessionRegistry | None,
    control: RunControl | None,
    containment: SessionContainment | None,
) -> ManagedOutcome:
    if control is not None and control.pending is not None:
        # Cancelled before it started (a shutdown during its preparation): start nothing.
        return _not_started(spec, control.pending)
    if not spec.cwd.is_dir():
        return _launch_failed(spec, f"working directory {spec.cwd} does not exist or is not a directory")
    executable = resolve_executable(spec.argv[0], spec.env, spec.cwd)
    if executable is None:
        return _launch_failed(
            spec, f"could not start {spec.argv[0]!r}: no such executable (checked PATH and the working directory)"
        )
    transcript_offset = _file_size(spec.transcript_path)
    try:
        group = containment.open_session(spec.session_id) if containment is not None else None
    except (OSError, cgroups.CgroupUnavailable) as exc:
        return _launch_failed(spec, f"could not create the session's control group: {exc}")
    started = anyio.current_time()
    process: anyio.abc.Process | None = None
    try:
        # Shielded: a cancellation that landed inside the spawn would leave a process nobody owns.
        # It is delivered at the first checkpoint below, where the ending kills the tree.
        with anyio.CancelScope(shield=True):
            use_pidfd_exit_events()
            OWN_CHILDREN.spawning += 1
            try:
                argv = [executable, *spec.argv[1:]]
                process = await anyio.open_process(
                    guarded(argv) if group is None else joining(argv, group, spec.env),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=spec.cwd,
                    env=dict(spec.env),
                    start_new_session=True,
                )
            finally:
                OWN_CHILDREN.spawning -= 1
            OWN_CHILDREN.pids.add(process.pid)
    except OSError as exc:
        if group is not None:
            cgroups.remove(group)
        return _launch_failed(spec, f"could not start {spec.argv[0]!r}: {exc.strerror or exc}")
    assert process is not None
    control = control or RunControl()
    decision = Decision()
    try:
        session = LiveSession(
            session_id=spec.session_id,
            kind=spec.kind,
            process=psutil.Process(process.pid),
            pgid=process.pid,
            cwd=spec.cwd,
            transcript_path=spec.transcript_path,
            transcript_offset=transcript_offset,
            policy=policy,
            marker_dir=spec.marker_dir,
            cgroup=group,
        )
    except psutil.Error:
        # Collected before we could look at it: a command that ran in a millisecond. It ran all the same.
        early: ManagedOutcome | None = None
        with anyio.CancelScope(shield=True):
            early = await _collected_early(spec, process, group, policy, started, transcript_offset)
        assert early is not None
        return early
    pipes = SessionPipes(process, session, decision, keep_stdout=not spec.reports_result)
    control._attach(decision, session)  # pyright: ignore[reportPrivateUsage]
    outcome: ManagedOutcome | None = None
    try:
        if registry is not None:
            register(registry, spec, session, decision, task_id=control.task_id)
        async with anyio.create_task_group() as race:
            race.start_soon(pipes.pump_stdout)
            race.start_soon(pipes.pump_stderr)
            race.start_soon(_watch_exit, process, pipes, policy, spec.reports_result)
            if spec.reports_result:
                race.start_soon(_watch_result, process, pipes, policy)
            race.start_soon(_watch_deadline, decision, policy)
            for watcher in watchers:
                race.start_soon(_run_watcher, watcher, session, decision)
            await decision.wait()
            race.cancel_scope.cancel()
    except anyio.get_cancelled_exc_class():
        decision.offer(Verdict(Termination.CANCELLED, DecidedBy.CANCEL, "the caller cancelled the run"))
        raise
    except BaseException:
        decision.offer(
            Verdict(
                Termination.CANCELLED,
                DecidedBy.CANCEL,
                "expeditor failed while supervising the session and stopped it; see its log",
            )
        )
        raise
    finally:
        # Whatever ended the race, and even while being cancelled, the tree dies before we return.
        with anyio.CancelScope(shield=True):
            assert decision.verdict is not None
            outcome = await _finish(process, session, pipes, decision.verdict, policy, started)
            control.outcome = outcome
            if registry is not None:
                try:
                    registry.remove(spec.session_id)
                except OSError as exc:
                    logger.warning("session=%s: its registry entry could not be removed: %s", spec.session_id, exc)
    assert outcome is not None
    return outcome


async def _watch_exit(process: anyio.abc.Process, pipes: SessionPipes, policy: RunPolicy, reports_result: bool) -> None:
    code = await process.wait()
    # The result line may still sit in the pipe; give the reader a bounded chance to see it.
    with anyio.move_on_after(policy.result_exit_grace):
        await pipes.stdout_eof.wait()
    pipes.decision.offer(_exit_verdict(code, pipes, reports_result))


def _exit_verdict(code: int, pipes: SessionPipes, reports_result: bool) -> Verdict:
    if not reports_result:
        return Verdict(Termination.COMPLETED, DecidedBy.EXIT, f"the command exited with code {code}")
    if pipes.state.result is not None:
        return Verdict(Termination.COMPLETED, DecidedBy.EXIT, f"the session reported its result and exited ({code})")
    reason = f"the session exited with code {code} without a result event; see stderr_tail"
    return Verdict(Termination.CRASHED, DecidedBy.EXIT, reason)


@dataclass
class _Unwatched:
    """The pipes' view of a session that ended before it could be watched."""

    stdout_bytes: int = 0
    clock: SignalClock = field(default_factory=SignalClock)


async def _collected_early(
    spec: LaunchSpec,
    process: anyio.abc.Process,
    group: Path | None,
    policy: RunPolicy,
    started: float,
    transcript_offset: int,
) -> ManagedOutcome:
    """The outcome of a session whose process exited and was collected before it could be watched: judged by
    its exit and its output, like any other. What it left behind dies with its process group (the group's id
    stays taken while anything is left in it) and, under cgroups, with its group."""
    code = await process.wait()
    OWN_CHILDREN.pids.discard(process.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if group is not None:
        await end_group(group, within=policy.kill_grace + _REAP_TIMEOUT)
    unwatched = _Unwatched()
    pipes = SessionPipes(process, unwatched, Decision(), keep_stdout=not spec.reports_result)
    with anyio.move_on_after(max(policy.result_exit_grace, 0.1)):
        async with anyio.create_task_group() as drains:
            drains.start_soon(pipes.pump_stdout)
            drains.start_soon(pipes.pump_stderr)
    with anyio.move_on_after(_REAP_TIMEOUT):
        await process.aclose()
    return ManagedOutcome(
        verdict=_exit_verdict(code, pipes, spec.reports_result),
        exit_code=code,
        stream=pipes.state,
        stderr_tail=pipes.stderr_tail(),
        stdout_tail=pipes.stdout_tail(),
        duration_s=anyio.current_time() - started,
        transcript_offset=transcript_offset,
        started_at=unwatched.clock.started_wall,
        ended_at=time.time(),
        last_moved=unwatched.clock.wall(),
        containment="tree" if group is None else "cgroup",
    )


async def _watch_result(process: anyio.abc.Process, pipes: SessionPipes, policy: RunPolicy) -> None:
    await pipes.result_seen.wait()
    with anyio.move_on_after(policy.result_exit_grace):
        await process.wait()
        return  # exited on its own: _watch_exit decides
    pipes.decision.offer(
        Verdict(
            Termination.COMPLETED,
            DecidedBy.RESULT,
            f"the session reported its result but had not exited {policy.result_exit_grace:g}s later; "
            "its process tree was killed",
        )
    )


async def _watch_deadline(decision: Decision, policy: RunPolicy) -> None:
    await anyio.sleep(policy.timeout)
    decision.offer(
        Verdict(
            Termination.TIMEOUT,
            DecidedBy.TIMEOUT,
            f"the session ran past its wall-clock limit of {policy.timeout:g}s; raise `timeout` if it needs longer",
        )
    )


async def _run_watcher(watcher: Watcher, session: LiveSession, decision: Decision) -> None:
    decision.offer(await watcher.watch(session))


async def _finish(
    process: anyio.abc.Process,
    session: LiveSession,
    pipes: SessionPipes,
    verdict: Verdict,
    policy: RunPolicy,
    started: float,
) -> ManagedOutcome:
    """Kill whatever is left of the session's tree while its pipes keep draining."""
    grace = policy.kill_grace if verdict.kill_grace is None else verdict.kill_grace
    killed: list[KilledProcess] = []
    async with anyio.create_task_group() as drains:
        if not pipes.stdout_eof.is_set():
            drains.start_soon(pipes.pump_stdout)
        if not pipes.stderr_eof.is_set():
            drains.start_soon(pipes.pump_stderr)
        if session.cgroup is not None:
            # Everything the session started is in its group, and nothing else is: no walk of the host.
            killed = await end_session_group(
                session.cgroup, session.process, session.pgid, grace=grace, within=max(grace, 0.1) + _REAP_TIMEOUT
            )
        else:
            killed = await _sweep(session, grace)
        with anyio.move_on_after(_REAP_TIMEOUT):
            await process.wait()
        if process.returncode is not None:
            OWN_CHILDREN.pids.discard(process.pid)
        # Every writer is dead now, so EOF is imminent unless an unkillable process holds the pipe.
        with anyio.move_on_after(max(grace, 0.1)):
            await pipes.stdout_eof.wait()
            await pipes.stderr_eof.wait()
        drains.cancel_scope.cancel()
    session.observe_transcript()
    with anyio.move_on_after(_REAP_TIMEOUT):
        await process.aclose()
    return ManagedOutcome(
        verdict=verdict,
        exit_code=process.returncode,
        stream=pipes.state,
        stderr_tail=pipes.stderr_tail(),
        stdout_tail=pipes.stdout_tail(),
        duration_s=anyio.current_time() - started,
        transcript_offset=session.transcript_offset,
        started_at=session.clock.started_wall,
        ended_at=time.time(),
        # The guard and the joining shell are our own plumbing: report the agent and what it started.
        killed=[entry for entry in killed if entry.pid != process.pid or not _plumbing(entry.cmdline)],
        last_moved=session.clock.wall(),
        suppressed_by=dict(session.suppressed_by),
        containment="tree" if session.cgroup is None else "cgroup",
    )


def _plumbing(cmdline: Sequence[str]) -> bool:
    return any(GUARD.name in part or part.endswith("/cgroup.procs") for part in cmdline)


async def _sweep(session: LiveSession, grace: float) -> list[KilledProcess]:
    """The fallback kill: the session's process group, its tree, its tag and what is known to descend from it."""
    # Sessions ending together (a server shutting down) share one walk of the process table;
    # the confirmation sweep below always looks afresh.
    targets = snapshot_targets(
        session.process, session.pgid, session.session_id, extra=session.known_descendants.values(), fresh=False
    )
    killed = await terminate(targets, session.pgid, grace=grace)
    # A process that left the group between our look and our signal (a daemon's middle process
    # calling setsid) escapes both; one that forked meanwhile leaves a child we could not have
    # seen. Look again, with a walk taken after everything we knew of was dead (other sessions
    # ending now may share it), until a look finds nothing: dead processes fork no more.
    for _ in range(_CONFIRMATION_SWEEPS if targets else 0):
        all_dead_at = time.monotonic()
        await anyio.lowlevel.checkpoint()  # let sessions ending alongside take the walk first, then share it
        late = snapshot_targets(session.process, session.pgid, session.session_id, newer_than=all_dead_at)
        if not late:
            break
        killed += await terminate(late, session.pgid, grace=0)
    return killed
