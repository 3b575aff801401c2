"""Owner liveness by lease, across "hosts" (host names) sharing one PostgreSQL store, with real processes.

A claimer on host B cannot be checked by host A's process table: A sees B alive while B's lease is
renewed, and dead once it expires (``LEASE_INTERVAL`` 0.5 s, ``LEASE_TTL`` 1.5 s here).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import pytest

from expeditor.executor.models import SessionKind
from expeditor.state import CampaignStore, ClaimAction, DispatchStatus, Owner, RunRecord, RunStatus
from expeditor.state.postgres import PostgresCampaignStore
from tests.contract.conftest import LEASE_INTERVAL, LEASE_TTL, StoreMaker, open_store_at

pytestmark = pytest.mark.parametrize("store_kind", ["postgres"])

FORK = multiprocessing.get_context("fork")
HOST_A, HOST_B = "host-a.test", "host-b.test"


def claim(store: CampaignStore, owner: Owner) -> ClaimAction:
    return store.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=owner).action


def _claimer_on_host_b(location: str, channel: Connection) -> None:
    """Claim and start camp/job as a process of host B, report its owner, then wait to be told to go."""
    store = open_store_at("postgres", location, host_name=HOST_B)
    owner = Owner.current().model_copy(update={"host": HOST_B})
    claimed = store.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=owner)
    store.mark_running("camp", "job", attempt=claimed.attempt, dispatched_session_id="s-b")
    started = RunRecord(
        run_id="s-b", kind=SessionKind.ORCHESTRATOR, dispatch_id=claimed.record.dispatch_id, owner=owner, started_at=1.0
    )
    store.record_run_started(started)
    channel.send(owner)
    channel.recv()
    store.close()


def start_claimer(location: str) -> tuple[BaseProcess, Connection, Owner]:
    ours, theirs = FORK.Pipe()
    child = FORK.Process(target=_claimer_on_host_b, args=(location, theirs))
    child.start()
    assert ours.poll(30), "the claimer on host B never claimed"
    owner: Owner = ours.recv()
    return child, ours, owner


def test_a_claimer_killed_on_another_host_is_dead_once_its_lease_expires(
    store_location: str, make_store: StoreMaker
) -> None:
    child, channel, owner_b = start_claimer(store_location)
    host_a = make_store(host_name=HOST_A)
    assert claim(host_a, Owner.current().model_copy(update={"host": HOST_A})) is ClaimAction.ALREADY_RUNNING
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    killed = time.monotonic()
    child.join(timeout=10)
    channel.close()
    record = host_a.get("camp", "job")
    assert record is not None
    assert record.owner == owner_b
    # Host A cannot see B's processes: B stays alive to it until the lease B last renewed runs out.
    deadline = killed + LEASE_TTL + 10
    while host_a.owner_alive(record):
        assert time.monotonic() < deadline, "a killed owner's lease never expired"
        time.sleep(0.05)
    assert time.monotonic() - killed >= LEASE_TTL - LEASE_INTERVAL - 0.2
    relaunched = host_a.claim(
        "camp",
        "job",
        recipe="r",
        inputs={},
        caller_session_id=None,
        owner=Owner.current().model_copy(update={"host": HOST_A}),
    )
    assert (relaunched.action, relaunched.attempt, relaunched.interrupted_owner) == (ClaimAction.LAUNCH, 2, owner_b)
    run = host_a.get_run("s-b")
    assert run is not None
    assert run.status is RunStatus.INTERRUPTED


def test_a_live_owner_on_another_host_is_never_interrupted(store_location: str, make_store: StoreMaker) -> None:
    child, channel, owner_b = start_claimer(store_location)
    host_a = make_store(host_name=HOST_A)
    me_on_a = Owner.current().model_copy(update={"host": HOST_A})
    try:
        watched_until = time.monotonic() + 3 * LEASE_TTL  # three whole leases: B must have renewed each time
        while time.monotonic() < watched_until:
            assert claim(host_a, me_on_a) is ClaimAction.ALREADY_RUNNING
            assert host_a.interrupt_dispatches_of_dead_owners() == []
            assert host_a.interrupt_runs_of_dead_owners() == []
            time.sleep(LEASE_INTERVAL / 2)
        record = host_a.get("camp", "job")
        assert record is not None
        assert (record.status, record.owner) == (DispatchStatus.RUNNING, owner_b)
    finally:
        channel.send("exit")
        child.join(timeout=10)
    assert child.exitcode == 0
    # B closed its store, giving its lease up: what it left running is an ended owner's at once.
    assert claim(host_a, me_on_a) is ClaimAction.LAUNCH


def test_the_last_renewal_is_exposed_and_moves(make_store: StoreMaker) -> None:
    store = make_store()
    assert isinstance(store, PostgresCampaignStore)
    assert store.last_lease_renewal is None  # nothing written yet: not an owner
    claim(store, Owner.current())
    first = store.last_lease_renewal
    assert first is not None
    deadline = time.monotonic() + 10 * LEASE_INTERVAL
    while store.last_lease_renewal == first:
        assert time.monotonic() < deadline, "the lease was never renewed"
        time.sleep(0.05)


def _claimer_with_a_long_lease(location: str, host_name: str, channel: Connection) -> None:
    """Claim camp/job under a lease that outlives the test, report the owner, then wait (to be SIGKILLed)."""
    store = PostgresCampaignStore(location, host_name=host_name, lease_interval=30, lease_ttl=120)
    owner = Owner.current(host_name)
    store.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=owner)
    channel.send(owner)
    channel.recv()
    store.close()


def test_a_claimer_killed_on_this_host_is_dead_at_once_though_its_lease_runs(
    store_location: str, make_store: StoreMaker
) -> None:
    ours, theirs = FORK.Pipe()
    child = FORK.Process(target=_claimer_with_a_long_lease, args=(store_location, HOST_A, theirs))
    child.start()
    assert ours.poll(30), "the claimer never claimed"
    owner: Owner = ours.recv()
    here, elsewhere = make_store(host_name=HOST_A), make_store(host_name=HOST_B)
    record = here.get("camp", "job")
    assert record is not None
    assert here.owner_alive(record)
    assert elsewhere.owner_alive(record)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=10)
    # Its lease has two minutes to run: only this host, which can see its process table, knows it is gone.
    assert not here.owner_alive(record)
    assert elsewhere.owner_alive(record)
    relaunched = claim(here, Owner.current(HOST_A))
    assert relaunched is ClaimAction.LAUNCH
    assert owner == record.owner
