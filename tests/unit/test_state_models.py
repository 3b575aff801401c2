"""State models: the transition table, the inputs hash, and how a run's end maps to a status."""

from __future__ import annotations

import itertools
import types

import pytest

from expeditor.errors import IllegalTransition, InvalidInput
from expeditor.executor.models import Termination
from expeditor.state import LEGAL_TRANSITIONS, DispatchStatus, RunStatus, check_transition, inputs_hash

P, R, S, F, INT, C = (
    DispatchStatus.PENDING,
    DispatchStatus.RUNNING,
    DispatchStatus.SUCCESS,
    DispatchStatus.FAILURE,
    DispatchStatus.INTERRUPTED,
    DispatchStatus.CANCELLED,
)

# Written out independently of the table under test: (from, to) pairs that must be accepted.
EXPECTED_LEGAL = {
    (P, P),
    (P, R),
    (P, F),
    (P, C),
    (P, INT),
    (R, S),
    (R, F),
    (R, C),
    (R, INT),
    (S, P),
    (F, P),
    (INT, P),
    (C, P),
}
ALL_PAIRS = list(itertools.product(DispatchStatus, repeat=2))


def test_the_table_covers_every_status() -> None:
    assert set(LEGAL_TRANSITIONS) == set(DispatchStatus)


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_each_transition_is_accepted_or_refused_naming_both_ends(
    current: DispatchStatus, target: DispatchStatus
) -> None:
    if (current, target) in EXPECTED_LEGAL:
        check_transition(current, target)
        return
    with pytest.raises(IllegalTransition) as refused:
        check_transition(current, target)
    assert f"from {current} to {target}" in str(refused.value)


def test_the_inputs_hash_does_not_depend_on_key_order() -> None:
    one = inputs_hash({"issue": "42", "repo": "acme/app", "options": {"a": 1, "b": [1, 2]}})
    other = inputs_hash({"options": {"b": [1, 2], "a": 1}, "repo": "acme/app", "issue": "42"})
    assert one == other
    assert len(one) == 64


def test_the_inputs_hash_changes_with_any_value() -> None:
    assert inputs_hash({"issue": "42"}) != inputs_hash({"issue": "43"})
    assert inputs_hash({"issue": "42"}) != inputs_hash({"issue": 42})
    assert inputs_hash({}) != inputs_hash({"issue": ""})


def test_inputs_that_are_not_json_are_refused() -> None:
    with pytest.raises(InvalidInput, match="JSON"):
        inputs_hash({"when": object()})
    with pytest.raises(InvalidInput, match="JSON"):
        inputs_hash({"ratio": float("nan")})


@pytest.mark.parametrize(
    ("termination", "is_error", "expected"),
    [
        (Termination.COMPLETED, False, RunStatus.SUCCESS),
        (Termination.COMPLETED, True, RunStatus.FAILURE),
        (Termination.CRASHED, False, RunStatus.FAILURE),
        (Termination.STALE, False, RunStatus.FAILURE),
        (Termination.IDLE_STALL, False, RunStatus.FAILURE),
        (Termination.TIMEOUT, False, RunStatus.FAILURE),
        (Termination.LAUNCH_FAILED, False, RunStatus.FAILURE),
        (Termination.CANCELLED, False, RunStatus.CANCELLED),
    ],
)
def test_a_runs_end_maps_to_a_status(termination: Termination, is_error: bool, expected: RunStatus) -> None:
    assert RunStatus.from_termination(termination, is_error=is_error) is expected


def test_the_state_package_exports_exactly_its_public_names() -> None:
    import expeditor.state as state

    public = {
        name
        for name, value in vars(state).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(state.__all__)
