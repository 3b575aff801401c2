"""One walk of the process table: the snapshot owns its parent links, and every reader walks them."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from expeditor.config import load_settings
from expeditor.executor.models import SessionKind
from expeditor.executor.proc_snapshot import ProcRow, ProcSnapshot
from expeditor.executor.process_tree import snapshot_targets
from expeditor.executor.session import LiveSession
from expeditor.monitor.process_table import ProcessTable


def _snapshot(*links: tuple[int, int]) -> ProcSnapshot:
    rows = [ProcRow(pid=pid, ppid=ppid, cpu_seconds=1.0, uid=0, start_time=0.0) for pid, ppid in links]
    return ProcSnapshot(taken=0.0, rows=rows)


def test_a_snapshot_walks_below_a_pid_and_not_above_it() -> None:
    snapshot = _snapshot((1, 0), (10, 1), (11, 10), (12, 11), (13, 10), (20, 1))
    assert snapshot.descendants(10) == {11, 12, 13}
    assert snapshot.descendants(1) == {10, 11, 12, 13, 20}
    assert snapshot.descendants(12) == set()
    assert snapshot.descendants(99) == set()


def test_a_snapshot_builds_its_parent_links_once() -> None:
    snapshot = _snapshot((1, 0), (10, 1))
    assert snapshot.children is snapshot.children
    assert snapshot.children[1] == [10]
    assert snapshot.by_pid[10].ppid == 1


def test_a_loop_in_the_parent_links_ends_the_walk_without_the_start() -> None:
    # A pid reused while /proc was being read can make two rows each other's parent.
    snapshot = _snapshot((30, 31), (31, 30), (32, 31))
    assert snapshot.descendants(30) == {31, 32}


@pytest.fixture
def tree() -> Iterator[tuple[psutil.Process, int]]:
    """A shell in its own process group with one background child: (the shell, the child's pid)."""
    shell = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; wait"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert shell.stdout is not None
        child = int(shell.stdout.readline())
        yield psutil.Process(shell.pid), child
    finally:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait(timeout=10)
        assert shell.stdout is not None
        shell.stdout.close()


def _session(tmp_path: Path, process: psutil.Process) -> LiveSession:
    return LiveSession(
        session_id=f"session-{process.pid}",
        kind=SessionKind.SKILL,
        process=process,
        pgid=process.pid,
        cwd=tmp_path,
        transcript_path=None,
        transcript_offset=0,
        policy=load_settings(home=tmp_path).run_policy(),
        marker_dir=None,
    )


@pytest.mark.anyio
async def test_sessions_sampled_in_one_interval_share_one_walk(
    tmp_path: Path, tree: tuple[psutil.Process, int]
) -> None:
    shell, child = tree
    table = ProcessTable()
    first = table.activity(_session(tmp_path, shell))
    second = _session(tmp_path, psutil.Process(os.getpid()))
    assert child in table.activity(second).pids
    assert table.walks == 1
    assert first.pids == {child}
    assert first.cpu_seconds >= 0
    assert set(second.known_descendants) >= {shell.pid, child}
    table.activity(second, max_age=0)
    assert table.walks == 2


def test_the_kill_targets_include_the_tree_below_the_root(tree: tuple[psutil.Process, int]) -> None:
    shell, child = tree
    targets = {target.process.pid: target for target in snapshot_targets(shell, shell.pid, None)}
    assert set(targets) == {shell.pid, child}
    assert targets[child].in_group
