"""Conversions to agentq.v1 messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from server.api.convert import timestamp


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 11, 29, 15, 4, 5, 123456, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1960, 5, 3, 1, 2, 3, 456789, tzinfo=UTC),  # before the epoch
        datetime(2026, 1, 1, 3, 0, tzinfo=timezone(timedelta(hours=5))),  # another zone
    ],
)
def test_a_timestamp_is_the_one_protobuf_computes(value: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(value)

    assert timestamp(value) == expected
