"""The store the contract tests hold to one behaviour, on each database, in each mode.

There is one implementation of the job transitions, `server/store/jobs.py: Jobs`, run by
two adapters: asyncpg on PostgreSQL and SQLAlchemy's async engine on SQLite. A transition
runs either on its own (each statement autocommitted; on SQLite, a transition that also
records an event opens a transaction of its own with `atomic()`) or inside a transaction
the caller holds (`Store.transaction()`), as a sweep or a cancel does. A backend claims
and applies through one of those two ways; rows are seeded and read back around them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import select

from server.store.jobs import NewJob
from server.store.records import AgentRecord, JobRecord, TurnRecord
from server.store.store import Store, Tables
from server.store.tables import context_turns, events, jobs
from server.store.transitions import Attempt, Transition

ROLE = "You are a careful research assistant."
TENANT = "acme"

# (sequence, type, attempt, error, delay_s, delta) of one event.
EventRow = tuple[int, str, int, str | None, float | None, str | None]


class Backend:
    """The store on one database; each claim and change alone or in a transaction."""

    def __init__(self, store: Store, *, in_transaction: bool) -> None:
        self.store = store
        self.in_transaction = in_transaction

    @asynccontextmanager
    async def _tables(self) -> AsyncIterator[Tables]:
        """The statements: the store's own, or those of a transaction committed after."""
        if not self.in_transaction:
            yield self.store
            return
        async with self.store.transaction() as tx:
            yield tx

    async def seed(
        self,
        *,
        due: datetime,
        agent_deleted: bool = False,
        context_id: str | None = None,
        tenant: str = TENANT,
        prompt: str = "Summarise the quarterly report.",
    ) -> JobRecord:
        """Store a new agent and one pending job of it, due at `due`, with its QUEUED event."""
        agent = AgentRecord(
            id=str(uuid.uuid4()),
            tenant_id=tenant,
            name="Researcher",
            role=ROLE,
            max_depth=3,
            spawn_shadow=False,
            generation=0,
            fitness=0.0,
            created_at=due,
            deleted_at=None,
        )
        await self.store.agents.add(agent)
        new = NewJob(
            id=str(uuid.uuid4()),
            tenant_id=tenant,
            agent_id=agent.id,
            prompt=prompt,
            context_id=context_id,
            enable_adversarial=False,
            enable_self_correction=False,
            max_debate_rounds=3,
            queued_at=due,
        )
        assert await self.store.jobs.queue(new)
        if agent_deleted:
            assert await self.store.agents.delete(agent.id, tenant_id=tenant, at=due)
        job = await self.store.jobs.get(new.id, tenant_id=tenant)
        assert job is not None
        return job

    async def claim(
        self, job_id: str, *, now: datetime, token: str, lease_until: datetime
    ) -> Attempt | None:
        """Claim the job, committed when this returns."""
        async with self._tables() as tables:
            return await tables.jobs.claim(job_id, now=now, token=token, lease_until=lease_until)

    async def apply(self, change: Transition) -> bool:
        """Apply one transition, committed when this returns."""
        async with self._tables() as tables:
            return await tables.jobs.apply(change)

    async def history(self, job_id: str, *, limit: int) -> list[TurnRecord]:
        """The turns the job's attempt may see, read as the worker reads them."""
        async with self._tables() as tables:
            return await tables.contexts.history(job_id, limit=limit)

    async def turns(self, *job_ids: str) -> list[TurnRecord]:
        """The committed turns of these jobs, in the order they completed."""
        query = (
            select(*TurnRecord.columns(context_turns))
            .where(context_turns.c.job_id.in_(job_ids))
            .order_by(context_turns.c.created_at, context_turns.c.job_id)
        )
        return [TurnRecord.of(row) for row in await self.store.db.all(query)]

    async def job(self, job_id: str) -> dict[str, Any]:
        """The job's committed columns."""
        row = await self.store.db.one(select(jobs).where(jobs.c.id == job_id))
        assert row is not None
        return dict(row)

    async def events(self, job_id: str) -> list[EventRow]:
        """The job's committed events, by sequence."""
        names = ("sequence", "type", "attempt", "error", "delay_s", "delta")
        query = (
            select(*(events.c[name] for name in names))
            .where(events.c.job_id == job_id)
            .order_by(events.c.sequence)
        )
        rows = await self.store.db.all(query)
        return [
            (r["sequence"], r["type"], r["attempt"], r["error"], r["delay_s"], r["delta"])
            for r in rows
        ]
