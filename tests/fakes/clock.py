"""A clock that stands still until a test moves it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


class FakeClock:
    """A Clock that stands still until a test sets or advances it (aware UTC)."""

    def __init__(self, now: datetime = START) -> None:
        self.set(now)

    def __call__(self) -> datetime:
        return self.now

    def set(self, now: datetime) -> None:
        """Jump to a point in time."""
        if now.tzinfo is None:
            raise ValueError("the clock keeps aware datetimes only")
        self.now = now.astimezone(UTC)

    def advance(self, seconds: float) -> datetime:
        """Move forward and return the new time."""
        self.now += timedelta(seconds=seconds)
        return self.now
