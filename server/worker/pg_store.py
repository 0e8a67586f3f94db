"""The engine's AttemptStore on PostgreSQL: the prebuilt transitions, awaited on asyncpg.

Each transition is one statement (its event row goes in through a data-modifying CTE), so
it needs no transaction of its own: asyncpg runs it in autocommit, one round trip. The
statements are the Core ones of `server/transitions.py`, compiled once for asyncpg's
numbered parameters; asyncpg then prepares and caches each on every connection.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import String, any_, bindparam, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.sql.expression import Executable

from server import transitions
from server.pg_jobs import close_pool, open_pool
from server.transitions import DUE, Attempt, Transition, jobs
from server.worker.store import cancel_check_batches

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]

_CANCEL_REQUESTED = select(jobs.c.id).where(
    jobs.c.id == any_(bindparam("job_ids", type_=ARRAY(String))),
    jobs.c.cancel_requested == true(),
)


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # Parameter names in the order of $1, $2, ...
    names: tuple[str, ...]
    # Values the statement carries itself (the 1 of `attempts + 1`).
    defaults: dict[str, Any]


@functools.cache
def _compiled(statement: Executable) -> _Compiled:
    compiled = statement.compile(dialect=_DIALECT)  # type: ignore[attr-defined]
    return _Compiled(str(compiled), tuple(compiled.positiontup), dict(compiled.params))


def _plain(value: Any) -> Any:
    # asyncpg encodes by the exact type; a status enum goes as its string.
    return value.value if isinstance(value, enum.Enum) else value


class PgStore:
    """AttemptStore on an asyncpg pool, sized by the caller from its concurrency."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, database_url: str, *, size: int) -> PgStore:
        """A store with a pool of up to `size` connections (one opened now)."""
        return cls(await open_pool(database_url, size=size))

    async def _row(self, statement: Executable, params: Mapping[str, Any]) -> asyncpg.Record | None:
        compiled = _compiled(statement)
        values = {**compiled.defaults, **params}
        args = [_plain(values[name]) for name in compiled.names]
        # Not shielded: an attempt is interrupted (cancel, time limit) only inside its
        # provider call, never in a statement; only a shutdown may cut one, and then
        # asyncpg cancels it on the server and the pool drops the connection.
        async with self._pool.acquire() as connection:
            return await connection.fetchrow(compiled.sql, *args)

    async def claim(
        self, job_id: str, *, now: datetime, token: str, lease_until: datetime
    ) -> Attempt | None:
        change = transitions.claim(job_id, now=now, token=token, lease_until=lease_until)
        row = await self._row(change.statement(postgres=True), change.params)
        return None if row is None else transitions.claimed(change, row)

    async def due_at(self, job_id: str) -> datetime | None:
        row = await self._row(DUE, {"job_id": job_id})
        if row is None or row["status"] != "pending":
            return None
        due: datetime = row["next_run_at"]
        return due

    async def apply(self, change: Transition) -> bool:
        return await self._row(change.statement(postgres=True), change.params) is not None

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        compiled = _compiled(_CANCEL_REQUESTED)
        found: set[str] = set()
        for batch in cancel_check_batches(job_ids):
            async with self._pool.acquire() as connection:
                rows = await connection.fetch(compiled.sql, batch)
            found.update(row["id"] for row in rows)
        return found

    async def aclose(self) -> None:
        await close_pool(self._pool)
