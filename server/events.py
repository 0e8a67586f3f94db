"""Job events: their kinds, and what a transition records."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EventType(enum.StrEnum):
    """The kinds of job event (proto JobEventType)."""

    QUEUED = "queued"
    STARTED = "started"
    RETRYING = "retrying"
    TOKEN = "token"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for the last event a job ever gets."""
        return self in (EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED)


@dataclass(frozen=True)
class EventSpec:
    """An event to record with a transition; its sequence comes from the job row."""

    type: EventType
    error: str | None = None
    delay_s: float | None = None
    delta: str | None = None
