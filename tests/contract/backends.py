"""The stores the contract tests hold to one behaviour, each behind the same small face.

Every backend claims and applies transitions through the adapter that does so in the
service: the fake's job repository, `JobTransitions` on a bare connection (a SQLite
worker's unit of work) or on a session (the API and the sweeper), and `PgStore` on
asyncpg (a PostgreSQL worker). Rows are stored and read back around those calls.
"""

from __future__ import annotations

import abc
import asyncio
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from server.store.events import EventSpec, EventType
from server.store.migrate import session_factory
from server.store.models import Agent, Job, JobEvent
from server.store.transitions import Attempt, Transition, events, jobs
from server.unit_of_work import SqlUnitOfWork
from server.worker.pg_store import PgStore
from server.worker.units import ConnectionUnitOfWork
from tests.unit.fakes import FakeStore, make_agent, make_job, snapshot

ROLE = "You are a careful research assistant."

# (sequence, type, attempt, error, delay_s, delta) of one event.
EventRow = tuple[int, str, int, str | None, float | None, str | None]


class Backend(abc.ABC):
    """One store: seed a job, claim it, apply transitions to it, read it back."""

    def seed(self, *, due: datetime, agent_deleted: bool = False) -> Job:
        """Store a new agent and one pending job of it, due at `due`, with its QUEUED event."""
        agent = make_agent(id=str(uuid.uuid4()), role=ROLE, created_at=due)
        if agent_deleted:
            agent.deleted_at = due
        job = make_job(agent, id=str(uuid.uuid4()), at=due, event_seq=1, cancel_requested=False)
        queued = EventSpec(EventType.QUEUED).row(job.id, sequence=1, attempt=0, at=due)
        self.add(agent, job, queued)
        return job

    @abc.abstractmethod
    def add(self, *rows: Agent | Job | JobEvent) -> None:
        """Store rows as committed, in order."""

    @abc.abstractmethod
    def claim(
        self, job_id: str, *, now: datetime, token: str, lease_until: datetime
    ) -> Attempt | None:
        """Claim the job in a transaction of its own."""

    @abc.abstractmethod
    def apply(self, change: Transition) -> bool:
        """Apply one transition in a transaction of its own."""

    @abc.abstractmethod
    def job(self, job_id: str) -> dict[str, Any]:
        """The job's committed columns."""

    @abc.abstractmethod
    def events(self, job_id: str) -> list[EventRow]:
        """The job's committed events, by sequence."""


class FakeBackend(Backend):
    """The unit tests' in-memory store, through its job repository."""

    def __init__(self) -> None:
        self.store = FakeStore()

    def add(self, *rows: Agent | Job | JobEvent) -> None:
        self.store.put(*rows)

    def claim(
        self, job_id: str, *, now: datetime, token: str, lease_until: datetime
    ) -> Attempt | None:
        with self.store.unit_of_work() as uow:
            attempt = uow.jobs.claim(job_id, now=now, token=token, lease_until=lease_until)
            uow.commit()
        return attempt

    def apply(self, change: Transition) -> bool:
        with self.store.unit_of_work() as uow:
            changed = uow.jobs.apply(change)
            uow.commit()
        return changed

    def job(self, job_id: str) -> dict[str, Any]:
        return snapshot(self.store.jobs[job_id])

    def events(self, job_id: str) -> list[EventRow]:
        return [
            (e.sequence, e.type, e.attempt, e.error, e.delay_s, e.delta)
            for e in self.store.events_of(job_id)
        ]


class SqlBackend(Backend):
    """A real database: rows stored through a session, read back with plain queries."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, *rows: Agent | Job | JobEvent) -> None:
        with session_factory(self.engine)() as session:
            for row in rows:
                session.add(row)
                session.flush()  # in order: a job needs its agent first
            session.commit()

    def job(self, job_id: str) -> dict[str, Any]:
        with self.engine.connect() as connection:
            row = connection.execute(select(jobs).where(jobs.c.id == job_id)).one()
        return dict(row._mapping)

    def events(self, job_id: str) -> list[EventRow]:
        names = ("sequence", "type", "attempt", "error", "delay_s", "delta")
        query = (
            select(*(events.c[name] for name in names))
            .where(events.c.job_id == job_id)
            .order_by(events.c.sequence)
        )
        with self.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(query)]


class ConnectionBackend(SqlBackend):
    """`JobTransitions` on a bare connection: a SQLite worker's unit of work."""

    def claim(
        self, job_id: str, *, now: datetime, token: str, lease_until: datetime
    ) -> Attempt | None:
        with ConnectionUnitOfWork(self.engine) as uow:
            attempt = uow.jobs.claim(job_id, now=now, token=token, lease_until=lease_until)
            uow.commit()
        return attempt

    def apply(self, change: Transition) -> bool:
        with ConnectionUnitOfWork(self.engine) as uow:
            changed = uow.jobs.apply(change)
            uow.commit()
        return changed


class SessionBackend(SqlBackend):
    """`JobTransitions` on a session: the API's and the sweeper's unit of work."""

    def claim(
        self, job_id: str, *, now: datetime, token: str, lease_until: datetime
    ) -> Attempt | None:
        with SqlUnitOfWork(session_factory(self.engine)) as uow:
            attempt = uow.jobs.claim(job_id, now=now, token=token, lease_until=lease_until)
            uow.commit()
        return attempt

    def apply(self, change: Transition) -> bool:
        with SqlUnitOfWork(session_factory(self.engine)) as uow:
            changed = uow.jobs.apply(change)
            uow.commit()
        return changed


class AsyncpgBackend(SqlBackend):
    """`PgStore`: a PostgreSQL worker's store, each statement in autocommit."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._loop = asyncio.Runner()
        url = engine.url.render_as_string(hide_password=False)
        self._store = self._loop.run(PgStore.open(url, size=2))

    def claim(
        self, job_id: str, *, now: datetime, token: str, lease_until: datetime
    ) -> Attempt | None:
        return self._loop.run(
            self._store.claim(job_id, now=now, token=token, lease_until=lease_until)
        )

    def apply(self, change: Transition) -> bool:
        return self._loop.run(self._store.apply(change))

    def close(self) -> None:
        """Close the pool and its event loop."""
        self._loop.run(self._store.aclose())
        self._loop.close()
