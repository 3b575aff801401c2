"""Times in results: ISO 8601 UTC in JSON, epoch seconds in Python and in the store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, ValidationError

from expeditor.times import STORAGE_CONTEXT, Timestamp, iso_utc


class Moment(BaseModel):
    at: Timestamp
    maybe: Timestamp | None = None
    per_signal: dict[str, Timestamp] = {}


def test_json_shows_iso_utc_and_python_keeps_the_epoch_number() -> None:
    moment = Moment(at=1_764_737_712.25, per_signal={"stdout": 0.5})
    assert moment.model_dump()["at"] == 1_764_737_712.25
    assert moment.model_dump(mode="json") == {
        "at": "2025-12-03T04:55:12.250Z",
        "maybe": None,
        "per_signal": {"stdout": "1970-01-01T00:00:00.500Z"},
    }
    assert '"at":"2025-12-03T04:55:12.250Z"' in moment.model_dump_json()


def test_storage_keeps_the_epoch_number() -> None:
    assert Moment(at=12.5).model_dump(mode="json", context=STORAGE_CONTEXT)["at"] == 12.5


def test_either_form_validates_back_to_the_same_moment() -> None:
    moment = Moment(at=1_764_737_712.25)
    assert Moment.model_validate(moment.model_dump(mode="json")).at == pytest.approx(1_764_737_712.25)
    assert Moment.model_validate({"at": 7}).at == 7.0
    assert (
        Moment.model_validate({"at": "2025-12-03T04:55:12"}).at
        == datetime(2025, 12, 3, 4, 55, 12, tzinfo=UTC).timestamp()
    )
    with pytest.raises(ValidationError):
        Moment.model_validate({"at": "yesterday"})


def test_iso_utc_is_read_back_by_the_standard_library() -> None:
    assert datetime.fromisoformat(iso_utc(0)) == datetime(1970, 1, 1, tzinfo=UTC)
