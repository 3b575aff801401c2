"""An end pressed on a store until it lands (``land_end``), and a record made encodable whole.

Restoring records and interrupting dead owners' records is the contract suite's (tests/contract/test_records.py)."""

from __future__ import annotations

import time

import pytest

from expeditor.errors import IllegalTransition, StaleAttempt, StoreUnavailable
from expeditor.executor.models import SessionKind
from expeditor.runs import EndRetry
from expeditor.runs.endings import encodable_copy, land_end
from expeditor.state import Owner, RunRecord

ME = Owner.current()
NO_DELAY = EndRetry(tries=3, delay=0)


def run(run_id: str = "s-1", owner: Owner = ME, **fields: object) -> RunRecord:
    values: dict[str, object] = {"kind": SessionKind.ORCHESTRATOR, "owner": owner, "started_at": time.time(), **fields}
    return RunRecord.model_validate({"run_id": run_id, **values})


def test_an_end_is_retried_while_the_store_is_unavailable_then_restored() -> None:
    calls: list[str] = []

    def mark() -> str:
        calls.append("mark")
        if len(calls) == 1:
            raise StoreUnavailable("busy")
        raise IllegalTransition("no record")

    def restore() -> str:
        calls.append("restore")
        return "restored"

    assert land_end("ending", mark, restore, NO_DELAY) == ("restored", True)
    assert calls == ["mark", "mark", "restore"]


def test_an_end_is_never_pressed_on_another_claimer_s_record_and_gives_up_after_its_tries() -> None:
    def stale() -> str:
        raise StaleAttempt("attempt 2 is current")

    def unavailable() -> str:
        raise StoreUnavailable("disk full")

    with pytest.raises(StaleAttempt):
        land_end("ending", stale, unavailable, NO_DELAY)
    with pytest.raises(StoreUnavailable, match="disk full"):
        land_end("ending", unavailable, unavailable, NO_DELAY)


def test_a_record_is_made_encodable_whole() -> None:
    record = run(reason="cut \ud800 mid-pair", label="\udcff")
    copy = encodable_copy(record)
    assert (copy.reason, copy.label) == ("cut \ufffd mid-pair", "\ufffd")
    copy.model_dump_json()
