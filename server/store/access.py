"""API keys and tenant limits."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from server.paging import Cursor
from server.store.database import Statements
from server.store.pages import newest_first
from server.store.records import ApiKeyRecord, LimitRecord
from server.store.tables import api_keys, tenant_limits

_KEY_COLUMNS = ApiKeyRecord.columns(api_keys)
_INSERT_KEY = insert(api_keys)
_KEY_BY_DIGEST = select(*_KEY_COLUMNS).where(api_keys.c.digest == bindparam("digest"))
_KEY_BY_ID = select(*_KEY_COLUMNS).where(api_keys.c.id == bindparam("id"))
_NEWEST_FIRST = (api_keys.c.created_at.desc(), api_keys.c.id.desc())
_ALL_KEYS = select(*_KEY_COLUMNS).order_by(*_NEWEST_FIRST)
_TENANT_KEYS = _ALL_KEYS.where(api_keys.c.tenant_id == bindparam("tenant_id"))


@functools.cache
def _tenant_page(after: bool) -> Select[Any]:
    of_tenant = select(*_KEY_COLUMNS).where(api_keys.c.tenant_id == bindparam("tenant_id"))
    return newest_first(of_tenant, api_keys.c.created_at, api_keys.c.id, after=after)


_ENDED_SINCE = select(api_keys.c.id).where(
    or_(
        api_keys.c.revoked_at >= bindparam("since", type_=api_keys.c.revoked_at.type),
        api_keys.c.expires_at.between(
            bindparam("since", type_=api_keys.c.expires_at.type),
            bindparam("now", type_=api_keys.c.expires_at.type),
        ),
    )
)
_REVOKE = (
    update(api_keys)
    .where(api_keys.c.id == bindparam("key_id"), api_keys.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("at", type_=api_keys.c.revoked_at.type))
)
_TOUCH = (
    update(api_keys)
    .where(
        api_keys.c.id == bindparam("key_id"),
        or_(
            api_keys.c.last_used_at.is_(None),
            api_keys.c.last_used_at < bindparam("older_than", type_=api_keys.c.last_used_at.type),
        ),
    )
    .values(last_used_at=bindparam("now", type_=api_keys.c.last_used_at.type))
)

_LIMIT_COLUMNS = LimitRecord.columns(tenant_limits)
_LIMITS = select(*_LIMIT_COLUMNS).where(tenant_limits.c.tenant_id == bindparam("tenant_id"))
# A write to the row: a row lock on PostgreSQL, the write lock on SQLite, held until
# the transaction ends, so a capped tenant's submits and a change of its limits take
# turns. The row is made first if the tenant has none.
_ENSURE = {
    dialect: module.insert(tenant_limits)
    .values(tenant_id=bindparam("tenant_id"))
    .on_conflict_do_nothing()
    for dialect, module in (("postgresql", postgresql), ("sqlite", sqlite))
}
_LOCK = (
    update(tenant_limits)
    .where(tenant_limits.c.tenant_id == bindparam("locked_tenant"))
    .values(tenant_id=tenant_limits.c.tenant_id)
    .returning(*_LIMIT_COLUMNS)
)
_SET = (
    update(tenant_limits)
    .where(tenant_limits.c.tenant_id == bindparam("of_tenant"))
    .values(tier=bindparam("new_tier"), max_unfinished_jobs=bindparam("new_cap"))
)


class ApiKeys:
    """API keys, found by their digest for each request."""

    def __init__(self, run: Statements) -> None:
        self._run = run

    async def add(self, key: ApiKeyRecord) -> None:
        """Store a new key."""
        await self._run.run(_INSERT_KEY, key.values())

    async def by_digest(self, digest: str) -> ApiKeyRecord | None:
        """The key with this digest, live or not."""
        row = await self._run.one(_KEY_BY_DIGEST, {"digest": digest})
        return None if row is None else ApiKeyRecord.of(row)

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id."""
        row = await self._run.one(_KEY_BY_ID, {"id": key_id})
        return None if row is None else ApiKeyRecord.of(row)

    async def all(self, *, tenant_id: str | None) -> list[ApiKeyRecord]:
        """Keys newest first, of one tenant or all."""
        if tenant_id is None:
            rows = await self._run.all(_ALL_KEYS)
        else:
            rows = await self._run.all(_TENANT_KEYS, {"tenant_id": tenant_id})
        return [ApiKeyRecord.of(row) for row in rows]

    async def page(self, tenant_id: str, *, after: Cursor | None, limit: int) -> list[ApiKeyRecord]:
        """Up to `limit` keys of the tenant, newest first, strictly after `after`."""
        params: dict[str, Any] = {"tenant_id": tenant_id, "limit": limit}
        if after is not None:
            params.update(after_at=after.at, after_id=after.id)
        rows = await self._run.all(_tenant_page(after is not None), params)
        return [ApiKeyRecord.of(row) for row in rows]

    async def revoke(self, key_id: str, *, at: datetime) -> None:
        """Revoke a key unless it is revoked already (the first time stays)."""
        await self._run.run(_REVOKE, {"key_id": key_id, "at": at})

    async def ended_since(self, since: datetime, *, now: datetime) -> list[str]:
        """Ids of the keys revoked at or after `since`, or expired between then and `now`."""
        rows = await self._run.all(_ENDED_SINCE, {"since": since, "now": now})
        return [row["id"] for row in rows]

    async def touch(self, key_id: str, *, now: datetime, older_than: datetime) -> None:
        """Set last_used_at unless it is already newer than `older_than`."""
        params = {"key_id": key_id, "now": now, "older_than": older_than}
        await self._run.run(_TOUCH, params)


class Limits:
    """Per-tenant overrides of tier and cap, and the lock that makes the cap atomic."""

    def __init__(self, run: Statements) -> None:
        self._run = run

    async def get(self, tenant_id: str) -> LimitRecord | None:
        """The tenant's overrides, if any."""
        row = await self._run.one(_LIMITS, {"tenant_id": tenant_id})
        return None if row is None else LimitRecord.of(row)

    async def lock(self, tenant_id: str) -> LimitRecord:
        """Hold the tenant's row until the transaction ends; its values as locked."""
        await self._run.run(_ENSURE[self._run.dialect], {"tenant_id": tenant_id})
        row = await self._run.one(_LOCK, {"locked_tenant": tenant_id})
        assert row is not None
        return LimitRecord.of(row)

    async def set(self, limits: LimitRecord) -> None:
        """Store the tenant's overrides (its row is locked by `lock`)."""
        params = {
            "of_tenant": limits.tenant_id,
            "new_tier": limits.tier,
            "new_cap": limits.max_unfinished_jobs,
        }
        await self._run.run(_SET, params)
