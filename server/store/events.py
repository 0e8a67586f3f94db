"""Job events: their kinds, what a transition records, and reading them in order."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select

from server.store.database import Statements
from server.store.records import EventRecord
from server.store.tables import events


class EventType(enum.StrEnum):
    """The kinds of job event (proto JobEventType)."""

    QUEUED = "queued"
    STARTED = "started"
    RETRYING = "retrying"
    TOKEN = "token"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STEP = "step"

    @property
    def terminal(self) -> bool:
        """True for the last event a job ever gets."""
        return self in (EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED)


class StepKind(enum.StrEnum):
    """What one call of a run did (proto StepKind)."""

    ANSWER = "answer"
    CRITIQUE = "critique"
    DEFENCE = "defence"
    VERDICT = "verdict"
    REVISION = "revision"
    SAFETY = "safety"


@dataclass(frozen=True)
class StepSpec:
    """The call a step event records: what it did, what it cost, its hash and answer.

    `confidence` and `evidence` belong to verdicts (and the safety judge's reason is
    its evidence).
    """

    kind: StepKind
    round: int
    tokens: int
    hash: str
    text: str
    confidence: float | None = None
    evidence: str | None = None


@dataclass(frozen=True)
class EventSpec:
    """An event to record with a transition; its sequence comes from the job row."""

    type: EventType
    error: str | None = None
    delay_s: float | None = None
    delta: str | None = None
    step: StepSpec | None = None


_AFTER = (
    select(*EventRecord.columns(events))
    .where(events.c.job_id == bindparam("job_id"), events.c.sequence > bindparam("after"))
    .order_by(events.c.sequence)
    .limit(bindparam("limit"))
)
_DELETE = delete(events).where(events.c.job_id.in_(bindparam("ids", expanding=True)))


class Events:
    """Job events: added by the transitions, read by streams, removed with their job."""

    def __init__(self, run: Statements) -> None:
        self._run = run

    async def after(self, job_id: str, sequence: int, *, limit: int) -> list[EventRecord]:
        """The job's events numbered above `sequence`, oldest first."""
        params = {"job_id": job_id, "after": sequence, "limit": limit}
        return [EventRecord.of(row) for row in await self._run.all(_AFTER, params)]

    async def delete_for(self, job_ids: Sequence[str]) -> None:
        """Remove every event of these jobs."""
        await self._run.run(_DELETE, {"ids": list(job_ids)})
