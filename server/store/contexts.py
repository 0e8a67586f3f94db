"""Conversation contexts: the turns of each tenant's contexts, stored, read and deleted.

A context is a name a tenant's client chose; its turns are the prompts and final answers
of its completed jobs, in the order they completed. A turn is stored by the completion
transition itself (`store_turn`, used by `server/store/transitions.py`), so it is
committed with the job's `completed` state or not at all. A context has no row of its
own: one without turns is simply empty, as is any other tenant's context of that name.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, FromClause, Select, and_, bindparam, delete, insert, select
from sqlalchemy.sql.dml import Insert

from server.paging import Cursor
from server.store.database import Statements
from server.store.pages import oldest_first
from server.store.records import TurnRecord
from server.store.tables import context_turns as turns
from server.store.tables import jobs

_COLUMNS = TurnRecord.columns(turns)


def store_turn(source: FromClause, *where: ColumnElement[bool]) -> Insert:
    """INSERT the turn of each job of `source` (jobs' columns) that has a context.

    `source` is the job row a completion just changed: on PostgreSQL the CTE of the
    completion's own UPDATE, on SQLite the jobs table read again in its transaction.
    """
    job = select(
        source.c.id,
        source.c.tenant_id,
        source.c.context_id,
        source.c.prompt,
        source.c.response,
        source.c.completed_at,
    ).where(source.c.context_id.is_not(None), *where)
    columns = ["job_id", "tenant_id", "context_id", "prompt", "response", "created_at"]
    return insert(turns).from_select(columns, job)


# SQLite: the turn of the job a completion changed, in the completion's transaction.
STORE_TURN_OF_JOB = store_turn(jobs, jobs.c.id == bindparam("job_id"))

# The turns a job's attempt may see: of its tenant's context, completed by the attempt's
# claim (the job's started_at), newest first. The job row names all three, so an attempt
# can never read another tenant's turns.
_HISTORY = (
    select(*_COLUMNS)
    .select_from(
        turns.join(
            jobs,
            and_(
                jobs.c.id == bindparam("job_id"),
                jobs.c.tenant_id == turns.c.tenant_id,
                jobs.c.context_id == turns.c.context_id,
            ),
        )
    )
    .where(turns.c.created_at <= jobs.c.started_at)
    .order_by(turns.c.created_at.desc(), turns.c.job_id.desc())
    .limit(bindparam("limit"))
)
_OF_CONTEXT = and_(
    turns.c.tenant_id == bindparam("tenant_id", type_=turns.c.tenant_id.type),
    turns.c.context_id == bindparam("context_id", type_=turns.c.context_id.type),
)
_DELETE = delete(turns).where(_OF_CONTEXT).returning(turns.c.job_id)
_DELETE_FOR = delete(turns).where(turns.c.job_id.in_(bindparam("ids", expanding=True)))


@functools.cache
def _page(after: bool) -> Select[Any]:
    query = select(*_COLUMNS).where(_OF_CONTEXT)
    return oldest_first(query, turns.c.created_at, turns.c.job_id, after=after)


class Contexts:
    """The turns of tenants' contexts, always looked up within one tenant."""

    def __init__(self, run: Statements) -> None:
        self._run = run

    async def history(self, job_id: str, *, limit: int) -> list[TurnRecord]:
        """Up to `limit` turns of the job's context that completed by its claim, newest first."""
        rows = await self._run.all(_HISTORY, {"job_id": job_id, "limit": limit})
        return [TurnRecord.of(row) for row in rows]

    async def page(
        self, tenant_id: str, context_id: str, *, after: Cursor | None, limit: int
    ) -> list[TurnRecord]:
        """Up to `limit` turns of the tenant's context, oldest first, strictly after `after`."""
        params: dict[str, Any] = {"tenant_id": tenant_id, "context_id": context_id, "limit": limit}
        if after is not None:
            params.update(after_at=after.at, after_id=after.id)
        return [TurnRecord.of(row) for row in await self._run.all(_page(after is not None), params)]

    async def delete(self, tenant_id: str, context_id: str) -> int:
        """Remove every turn of the tenant's context; how many there were."""
        params = {"tenant_id": tenant_id, "context_id": context_id}
        return len(await self._run.all(_DELETE, params))

    async def delete_for(self, job_ids: Sequence[str]) -> None:
        """Remove the turns of these jobs (retention removes the jobs)."""
        await self._run.run(_DELETE_FOR, {"ids": list(job_ids)})
