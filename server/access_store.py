"""Repositories of API keys and tenant limits. They never commit: the unit of work does."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.models import ApiKey, Job, TenantLimit
from server.repository import UNFINISHED


class ApiKeyRepository:
    """API keys, found by their digest for each request."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, key: ApiKey) -> None:
        """Stage a new key."""
        self._session.add(key)

    def by_digest(self, digest: str) -> ApiKey | None:
        """The key with this digest, live or not."""
        return self._session.scalars(select(ApiKey).where(ApiKey.digest == digest)).first()

    def get(self, key_id: str) -> ApiKey | None:
        """The key with this id."""
        return self._session.get(ApiKey, key_id)

    def all(self, *, tenant_id: str | None) -> Sequence[ApiKey]:
        """Keys newest first, of one tenant or all."""
        query = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
        if tenant_id is not None:
            query = query.where(ApiKey.tenant_id == tenant_id)
        return self._session.scalars(query).all()

    def touch(self, key_id: str, *, now: datetime, older_than: datetime) -> None:
        """Set last_used_at unless it is already newer than `older_than` (one write a minute)."""
        stale = (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < older_than)
        statement = update(ApiKey).where(ApiKey.id == key_id, stale).values(last_used_at=now)
        self._session.execute(statement, execution_options={"synchronize_session": False})


class TenantLimitRepository:
    """Per-tenant overrides of tier and cap, and the lock that makes the cap atomic."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, tenant_id: str) -> TenantLimit | None:
        """The tenant's overrides, if any."""
        return self._session.get(TenantLimit, tenant_id)

    def add(self, limit: TenantLimit) -> None:
        """Stage a tenant's first overrides."""
        self._session.add(limit)

    def lock(self, tenant_id: str) -> TenantLimit:
        """Hold the tenant's row until commit, so its submits take turns."""
        dialect = self._session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self._session.execute(
            insert(TenantLimit).values(tenant_id=tenant_id).on_conflict_do_nothing()
        )
        # A write to the row: a row lock on PostgreSQL, the write lock on SQLite,
        # taken before the count below is read.
        self._session.execute(
            update(TenantLimit)
            .where(TenantLimit.tenant_id == tenant_id)
            .values(tenant_id=TenantLimit.tenant_id),
            execution_options={"synchronize_session": False},
        )
        limit = self._session.get(TenantLimit, tenant_id, populate_existing=True)
        assert limit is not None
        return limit

    def unfinished_jobs(self, tenant_id: str) -> int:
        """How many of the tenant's jobs are pending or running."""
        query = select(func.count()).where(Job.tenant_id == tenant_id, Job.status.in_(UNFINISHED))
        return int(self._session.execute(query).scalar_one())
