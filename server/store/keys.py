"""Idempotency keys per tenant: which job a request id made."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, delete, insert, select, tuple_

from server.store.database import Statements
from server.store.records import IdempotencyRecord
from server.store.tables import idempotency_keys as keys

_GET = select(*IdempotencyRecord.columns(keys)).where(
    keys.c.tenant_id == bindparam("tenant_id"), keys.c.key == bindparam("key")
)
_INSERT = insert(keys)
_DISCARD = delete(keys).where(
    keys.c.tenant_id == bindparam("tenant_id"), keys.c.key == bindparam("key")
)
_DELETE_FOR = delete(keys).where(keys.c.job_id.in_(bindparam("ids", expanding=True)))
# Rows another transaction holds are skipped, as every sweep does.
_OLD = (
    select(keys.c.tenant_id, keys.c.key)
    .where(keys.c.created_at < bindparam("cutoff", type_=keys.c.created_at.type))
    .with_for_update(skip_locked=True)
)
_DELETE_OLD = delete(keys).where(tuple_(keys.c.tenant_id, keys.c.key).in_(_OLD))


class IdempotencyKeys:
    """The keys of idempotent executes."""

    def __init__(self, run: Statements) -> None:
        self._run = run

    async def get(self, tenant_id: str, key: str) -> IdempotencyRecord | None:
        """The stored key, if any."""
        row = await self._run.one(_GET, {"tenant_id": tenant_id, "key": key})
        return None if row is None else IdempotencyRecord.of(row)

    async def add(self, key: IdempotencyRecord) -> None:
        """Store a new key; DuplicateKey if a concurrent twin stored it first."""
        await self._run.run(_INSERT, key.values())

    async def discard(self, key: IdempotencyRecord) -> None:
        """Remove a key whose retention is over."""
        await self._run.run(_DISCARD, {"tenant_id": key.tenant_id, "key": key.key})

    async def delete_for(self, job_ids: Sequence[str]) -> None:
        """Remove the keys of these jobs."""
        await self._run.run(_DELETE_FOR, {"ids": list(job_ids)})

    async def delete_older_than(self, cutoff: datetime) -> None:
        """Remove keys made before the cutoff, but for those another transaction holds."""
        await self._run.run(_DELETE_OLD, {"cutoff": cutoff})
