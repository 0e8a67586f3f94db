"""The unit of work: one transaction per RPC and per worker message."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

from sqlalchemy.orm import Session, sessionmaker

from server.access_store import ApiKeyRepository, TenantLimitRepository
from server.db import raise_if_connection_lost
from server.events import EventRepository
from server.repository import AgentRepository, JobRepository, KeyRepository


class UnitOfWork(Protocol):
    """What the service layer needs: repositories and one commit."""

    agents: AgentRepository
    jobs: JobRepository
    events: EventRepository
    keys: KeyRepository
    api_keys: ApiKeyRepository
    limits: TenantLimitRepository

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...


class SqlUnitOfWork:
    """A session for the span of a `with` block; rolled back unless committed."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def __enter__(self) -> Self:
        self._session = self._sessions()
        self.agents = AgentRepository(self._session)
        self.jobs = JobRepository(self._session)
        self.events = EventRepository(self._session)
        self.keys = KeyRepository(self._session)
        self.api_keys = ApiKeyRepository(self._session)
        self.limits = TenantLimitRepository(self._session)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # close() ends an uncommitted transaction by rolling it back, but unlike
        # rollback() it leaves loaded rows readable for the caller.
        self._session.close()
        raise_if_connection_lost(exc)

    def commit(self) -> None:
        """Make everything staged in this unit of work durable."""
        self._session.commit()
