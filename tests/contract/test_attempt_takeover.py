"""A launcher other than the claimer takes an attempt over (a queue worker): once per attempt, in every store.

The claim records the session a relaunch resumes on the record itself (``resume_session_id``), because the
process that launches the attempt is no longer the one that claimed it.
"""

from __future__ import annotations

import pytest

from expeditor.errors import IllegalTransition, InvalidInput
from expeditor.state import DispatchStatus, Owner
from tests.contract.conftest import StoreMaker

CLAIMER = Owner.current()
WORKER = Owner(pid=CLAIMER.pid, start_time=CLAIMER.start_time, host="worker-host")


def test_the_first_launcher_takes_the_attempt_over_and_a_second_is_refused(make_store: StoreMaker) -> None:
    store = make_store()
    claimed = store.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=CLAIMER)
    taken = store.mark_running("camp", "job", attempt=claimed.attempt, dispatched_session_id="s-1", owner=WORKER)
    assert (taken.status, taken.owner) == (DispatchStatus.RUNNING, WORKER)
    with pytest.raises(IllegalTransition):
        store.mark_running("camp", "job", attempt=claimed.attempt, dispatched_session_id="s-2", owner=CLAIMER)
    record = store.get("camp", "job")
    assert record is not None
    assert (record.owner, record.dispatched_session_id) == (WORKER, "s-1")


def test_a_relaunch_records_the_session_it_resumes_and_a_success_resumes_nothing(make_store: StoreMaker) -> None:
    store = make_store()
    first = store.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=CLAIMER)
    assert first.record.resume_session_id is None
    store.mark_running("camp", "job", attempt=1, dispatched_session_id="s-1")
    store.mark_failed("camp", "job", attempt=1, error="boom")
    again = store.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=CLAIMER)
    assert (again.attempt, again.prior_session_id, again.record.resume_session_id) == (2, "s-1", "s-1")
    stored = store.get("camp", "job")
    assert stored is not None
    assert stored.resume_session_id == "s-1"
    store.mark_running("camp", "job", attempt=2, dispatched_session_id="s-1")
    store.mark_succeeded("camp", "job", attempt=2, summary="done")
    forced = store.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=CLAIMER, force=True)
    assert (forced.prior_session_id, forced.record.resume_session_id) == (None, None)


@pytest.mark.parametrize("store_kind", ["sqlite"])
def test_a_sqlite_store_refuses_to_queue_a_job_with_its_claim(make_store: StoreMaker) -> None:
    store = make_store()
    with pytest.raises(InvalidInput, match="PostgreSQL store_url"):
        store.claim("camp", "job", recipe="r", inputs={}, caller_session_id=None, owner=CLAIMER, on_launch=print)
    assert store.get("camp", "job") is None
