"""The rows a server stored, read back as the store's own records for tests to inspect."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, select

from server.store.records import EventRecord, JobRecord
from server.store.tables import events, jobs


def stored_jobs(engine: Engine, ids: Sequence[str]) -> dict[str, JobRecord]:
    """The jobs of these ids that exist, by id."""
    query = select(*JobRecord.columns(jobs)).where(jobs.c.id.in_(ids))
    with engine.connect() as connection:
        records = [JobRecord.of(row._asdict()) for row in connection.execute(query)]
    return {record.id: record for record in records}


def stored_events(engine: Engine, job_id: str) -> list[EventRecord]:
    """The events of one job, in their order."""
    query = (
        select(*EventRecord.columns(events))
        .where(events.c.job_id == job_id)
        .order_by(events.c.sequence)
    )
    with engine.connect() as connection:
        return [EventRecord.of(row._asdict()) for row in connection.execute(query)]
