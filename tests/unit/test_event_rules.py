"""The event log's rules on their own: what `since` reads, how data is measured."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from server.errors import InvalidArgument
from server.service.event_log import SINCE_MESSAGE, compact_json, parse_since, parse_type


@pytest.mark.parametrize(
    ("text", "at"),
    [
        ("2026-04-01T12:00:00Z", datetime(2026, 4, 1, 12, tzinfo=UTC)),
        ("2026-04-01t12:00:00z", datetime(2026, 4, 1, 12, tzinfo=UTC)),
        ("2026-04-01 14:00:00+02:00", datetime(2026, 4, 1, 12, tzinfo=UTC)),
        # Python keeps microseconds: finer digits are cut, never rounded up.
        ("2026-04-01T12:00:00.123456999Z", datetime(2026, 4, 1, 12, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_since_reads_rfc_3339_in_utc(text: str, at: datetime) -> None:
    assert parse_since(text) == at


@pytest.mark.parametrize("text", ["2026-04-01", "2026-04-01T12:00Z", "2026-13-01T12:00:00Z", ""])
def test_since_refuses_what_is_not_rfc_3339(text: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_since(text)

    assert refused.value.message == SINCE_MESSAGE


def test_data_is_compact_json_with_whole_numbers_as_integers() -> None:
    stored = compact_json({"a": 1.0, "b": [2.5, {"é": None}], "c": 2.0**60})

    assert stored == '{"a":1,"b":[2.5,{"é":null}],"c":1.152921504606847e+18}'


def test_a_type_of_the_job_prefix_is_read_but_not_emitted() -> None:
    assert parse_type("job.completed") == "job.completed"
    with pytest.raises(InvalidArgument):
        parse_type("job.completed", emitting=True)
