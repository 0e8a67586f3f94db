"""Agents, always looked up within one tenant."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, delete, insert, select, update

from server.paging import Cursor
from server.store.database import Statements
from server.store.pages import newest_first
from server.store.records import AgentRecord
from server.store.tables import agents, jobs

_COLUMNS = AgentRecord.columns(agents)


def _param(name: str) -> Any:
    return bindparam(name, type_=agents.c[name].type)


_INSERT = insert(agents)
_GET = select(*_COLUMNS).where(
    agents.c.id == _param("id"),
    agents.c.tenant_id == _param("tenant_id"),
    agents.c.deleted_at.is_(None),
)
_DELETE = (
    update(agents)
    .where(
        agents.c.id == bindparam("agent_id"),
        agents.c.tenant_id == bindparam("of_tenant"),
        agents.c.deleted_at.is_(None),
    )
    .values(deleted_at=bindparam("at", type_=agents.c.deleted_at.type))
    .returning(agents.c.id)
)
_UNUSED_DELETED = (
    select(agents.c.id)
    .where(
        agents.c.deleted_at.is_not(None),
        ~select(jobs.c.id).where(jobs.c.agent_id == agents.c.id).exists(),
    )
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_PURGE = delete(agents).where(agents.c.id.in_(bindparam("ids", expanding=True)))


@functools.cache
def _page(after: bool) -> Select[Any]:
    live = select(*_COLUMNS).where(
        agents.c.tenant_id == _param("tenant_id"), agents.c.deleted_at.is_(None)
    )
    return newest_first(live, agents.c.created_at, agents.c.id, after=after)


class Agents:
    """Agents of tenants; a deleted one stays until its last job is gone."""

    def __init__(self, run: Statements) -> None:
        self._run = run

    async def add(self, agent: AgentRecord) -> None:
        """Store a new agent."""
        await self._run.run(_INSERT, agent.values())

    async def get(self, agent_id: str, *, tenant_id: str) -> AgentRecord | None:
        """The tenant's live agent, or None (unknown, deleted or another tenant's)."""
        row = await self._run.one(_GET, {"id": agent_id, "tenant_id": tenant_id})
        return None if row is None else AgentRecord.of(row)

    async def delete(self, agent_id: str, *, tenant_id: str, at: datetime) -> bool:
        """Mark the tenant's live agent deleted; False if there is none."""
        params = {"agent_id": agent_id, "of_tenant": tenant_id, "at": at}
        return await self._run.one(_DELETE, params) is not None

    async def page(self, tenant_id: str, *, after: Cursor | None, limit: int) -> list[AgentRecord]:
        """Up to `limit` live agents of the tenant, newest first, strictly after `after`."""
        params: dict[str, Any] = {"tenant_id": tenant_id, "limit": limit}
        if after is not None:
            params.update(after_at=after.at, after_id=after.id)
        rows = await self._run.all(_page(after is not None), params)
        return [AgentRecord.of(row) for row in rows]

    async def purge_deleted(self, *, limit: int) -> int:
        """Remove deleted agents that no longer have any job; returns how many."""
        ids = [row["id"] for row in await self._run.all(_UNUSED_DELETED, {"limit": limit})]
        if ids:
            await self._run.run(_PURGE, {"ids": ids})
        return len(ids)
