"""Job events: what a transition records, and their repository."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.models import JobEvent


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

    def row(self, job_id: str, *, sequence: int, attempt: int, at: datetime) -> JobEvent:
        """The row of this event as the job's `sequence`-th, during attempt `attempt`."""
        return JobEvent(
            job_id=job_id,
            sequence=sequence,
            type=self.type.value,
            created_at=at,
            attempt=attempt,
            error=self.error,
            delay_s=self.delay_s,
            delta=self.delta,
        )


class EventRepository:
    """A job's events, in order."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, event: JobEvent) -> None:
        """Stage an event row."""
        self._session.add(event)

    def after(self, job_id: str, sequence: int, *, limit: int) -> Sequence[JobEvent]:
        """The job's events numbered above `sequence`, oldest first."""
        query = (
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.sequence > sequence)
            .order_by(JobEvent.sequence)
            .limit(limit)
        )
        return self._session.scalars(query).all()

    def delete_for(self, job_ids: Sequence[str]) -> None:
        """Remove every event of these jobs."""
        self._session.execute(delete(JobEvent).where(JobEvent.job_id.in_(job_ids)))
