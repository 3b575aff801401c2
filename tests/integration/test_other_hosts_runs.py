"""Nothing is read from another host's disk: its runs are reported and reaped from what the store holds.

A run owned by another host name has its transcript on that host. The usage report and the reaper
use the figures its supervisor pushed to the store (``record_run_progress``), marked partial, and
open no file; that no file is opened is seen by an audit hook on ``open``, which also sees this
host's transcripts being read, so its silence means something. The supervisor's pushes are seen
landing in the store while a real fake-agent run goes on.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import psutil
import pytest

from expeditor.executor.models import SessionKind
from expeditor.reports.aggregate import campaign_report
from expeditor.runs import CallerContext, Supervisor, build_executor, reap_leftovers
from expeditor.state import CampaignStore, Owner, RunRecord, RunStatus, SqliteCampaignStore
from expeditor.state.postgres import PostgresCampaignStore
from expeditor.usage.models import SessionUsage, TokenUsage, UsageSource
from tests.support.fake import fake_settings, scenario_request

HERE = "host-a"
ELSEWHERE = "host-b"
TRANSCRIPT = Path(__file__).parents[1] / "data" / "usage" / "plan.transcript.jsonl"
SO_FAR = SessionUsage(
    total=TokenUsage(input_tokens=11, output_tokens=7, cache_read_tokens=1000, turns=1),
    by_model={"claude-sonnet-4-5": TokenUsage(input_tokens=11, output_tokens=7, cache_read_tokens=1000, turns=1)},
    source=UsageSource.TRANSCRIPT,
    partial=True,
)

# Paths opened by this process while a test watches (an audit hook cannot be removed, so it is added once).
_opened: list[str] | None = None
_hooked = False


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _opened is not None and event == "open" and args and isinstance(args[0], str | bytes | os.PathLike):
        _opened.append(os.fsdecode(args[0]))  # pyright: ignore[reportUnknownArgumentType]


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """Every path this process opens during the test."""
    global _opened, _hooked
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked = True
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CampaignStore]:
    """A store on host ``HERE``; PostgreSQL leases are test-sized, so an unleased owner is dead at once."""
    made: CampaignStore
    if request.param == "sqlite":
        made = SqliteCampaignStore(tmp_path / "state.sqlite3", host_name=HERE)
    else:
        url: str = request.getfixturevalue("pg_database_url")
        made = PostgresCampaignStore(url, host_name=HERE, lease_interval=0.5, lease_ttl=1.5)
    try:
        yield made
    finally:
        made.close()


def exited_process(host: str) -> Owner:
    """The identity of a real process that has exited, recorded under ``host``."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    start_time = psutil.Process(child.pid).create_time()
    assert child.stdin is not None
    child.stdin.close()
    child.wait(timeout=10)
    return Owner(pid=child.pid, start_time=start_time, host=host)


def running_run(campaign: str, owner: Owner, transcript: Path) -> RunRecord:
    return RunRecord(
        run_id=str(uuid.uuid4()),
        kind=SessionKind.SKILL,
        campaign_id=campaign,
        label="/plan",
        transcript_path=str(transcript),
        owner=owner,
        started_at=time.time() - 60,
    )


def test_the_report_uses_another_hosts_stored_figures_marked_partial_and_opens_no_file(
    store: CampaignStore, tmp_path: Path, opened: list[str]
) -> None:
    campaign = f"report-{uuid.uuid4().hex[:8]}"
    elsewhere = tmp_path / "only-on-host-b" / "session.jsonl"  # does not exist here
    theirs = store.record_run_started(running_run(campaign, exited_process(ELSEWHERE), elsewhere))

    (row,) = campaign_report(store, campaign).steps
    assert (row.usage.all_tokens, row.partial) == (0, True)  # nothing pushed yet: no figures, and said so

    assert store.record_run_progress(theirs.run_id, usage=SO_FAR, last_moved=time.time())
    report = campaign_report(store, campaign)
    (row,) = report.steps
    assert row.usage == SO_FAR.total
    assert row.partial
    assert report.total.partial
    assert [note.text for note in report.footnotes if "Partial" in note.text]
    assert not [path for path in opened if "only-on-host-b" in path], opened

    # The same kind of run owned here is read from its transcript: the hook sees this host's reads.
    mine = tmp_path / "here" / "session.jsonl"
    mine.parent.mkdir()
    shutil.copy(TRANSCRIPT, mine)
    store.record_run_started(running_run(campaign, Owner.current(HERE), mine))
    rows = {row.step: row for row in campaign_report(store, campaign).steps}
    assert rows["/plan"].usage.output_tokens > SO_FAR.total.output_tokens
    assert str(mine) in opened
    assert not [path for path in opened if "only-on-host-b" in path], opened


@pytest.mark.anyio
async def test_the_reaper_closes_another_hosts_dead_run_with_its_stored_figures_and_opens_no_file(
    pg_database_url: str, tmp_path: Path, opened: list[str]
) -> None:
    settings = fake_settings(tmp_path, host_name=HERE)
    store = PostgresCampaignStore(pg_database_url, host_name=HERE, lease_interval=0.5, lease_ttl=1.5)
    try:
        campaign = f"reap-{uuid.uuid4().hex[:8]}"
        elsewhere = tmp_path / "only-on-host-b" / "session.jsonl"
        theirs = store.record_run_started(running_run(campaign, exited_process(ELSEWHERE), elsewhere))
        assert store.record_run_progress(theirs.run_id, usage=SO_FAR, last_moved=time.time())
        # A dead run of this host, whose transcript is here: the reaper reads that one.
        mine_path = tmp_path / "here" / "session.jsonl"
        mine_path.parent.mkdir()
        shutil.copy(TRANSCRIPT, mine_path)
        mine = store.record_run_started(running_run(campaign, exited_process(HERE), mine_path))

        await reap_leftovers(settings, build_executor(settings).registry, store)

        reaped = store.get_run(theirs.run_id)
        assert reaped is not None
        assert (reaped.status, reaped.usage.total, reaped.usage.partial) == (RunStatus.INTERRUPTED, SO_FAR.total, True)
        assert reaped.reason is not None
        assert ELSEWHERE in reaped.reason
        assert not [path for path in opened if "only-on-host-b" in path], opened
        local = store.get_run(mine.run_id)
        assert local is not None
        assert local.status is RunStatus.INTERRUPTED
        assert local.usage.partial
        assert local.usage.total.output_tokens > 0
        assert str(mine_path) in opened
    finally:
        store.close()


@pytest.mark.anyio
async def test_a_running_runs_usage_so_far_reaches_the_store_before_it_ends(
    store: CampaignStore, tmp_path: Path
) -> None:
    settings = fake_settings(tmp_path, host_name=HERE, run_progress_interval=0.05)
    supervisor = Supervisor(settings, build_executor(settings), store=store)
    reply = {"content": "working on it", "usage": {"input": 11, "output": 7, "cache_read": 1000, "cache_write": 0}}
    request = scenario_request(tmp_path, {"steps": [{"assistant": reply}, {"sleep": 30}, {"result": {}}]})
    async with anyio.create_task_group() as group:
        handle = supervisor.start(group, request, CallerContext(str(uuid.uuid4()), None))
        with anyio.fail_after(20):
            await handle.control.started.wait()
            while (stored := store.get_run(handle.session_id)) is None or stored.usage.total.output_tokens == 0:
                await anyio.sleep(0.05)  # another thread writes the store: nothing to wait on but the record
        assert not handle.done
        assert stored.status is RunStatus.RUNNING
        # From the transcript (the stream's copy of the reply says 1 output token, the transcript 7).
        assert (stored.usage.total.output_tokens, stored.usage.partial) == (7, True)
        assert stored.last_moved_at is not None
        assert stored.last_moved_at <= time.time()
        handle.cancel("the test saw its progress", grace=0.05)
        with anyio.fail_after(20):
            result = await handle.result()
        ended = store.get_run(handle.session_id)
        assert ended is not None
        assert (ended.status, ended.reason) == (RunStatus.CANCELLED, result.reason)
        assert ended.usage.total.output_tokens == 7


@pytest.mark.anyio
async def test_a_store_that_cannot_take_progress_costs_one_warning_and_never_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's directory should be\n")
    store = SqliteCampaignStore(blocker / "state.sqlite3", host_name=HERE)
    settings = fake_settings(tmp_path, host_name=HERE, run_progress_interval=0.05)
    supervisor = Supervisor(settings, build_executor(settings), store=store)
    # Each reply moves the session, so several pushes are due (and fail) while it runs.
    replies = [step for n in range(4) for step in ({"assistant": f"step {n}"}, {"sleep": 0.3})]
    request = scenario_request(tmp_path, {"steps": [*replies, {"result": {}}]})
    try:
        with caplog.at_level(logging.DEBUG, logger="expeditor.runs.progress"):
            result = await supervisor.run(request, CallerContext(str(uuid.uuid4()), None))
    finally:
        store.close()
    assert result.success, result.reason
    failed = [r for r in caplog.records if r.name == "expeditor.runs.progress" and "could not be recorded" in r.message]
    assert len(failed) >= 2
    assert [r.levelno for r in failed].count(logging.WARNING) == 1
