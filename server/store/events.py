"""A job's events, in order."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, delete, select

from server.store.database import Statements
from server.store.records import EventRecord
from server.store.tables import events

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
