"""The service layer of the API: one unit of work per call, tenant checks, enqueueing."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata

from server.auth import Principal
from server.clock import Clock, utc_now
from server.errors import NotFound
from server.jobs import AGENT_NOT_FOUND, JobService, cancel_tree
from server.models import Agent
from server.paging import Cursor, Page, PageTokens, page_size
from server.unit_of_work import UnitOfWork
from server.validation import AgentSpec

__all__ = ["AgentService", "Health", "JobService", "Services", "SystemService"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Health:
    """What the health check reports."""

    version: str
    checked_at: datetime
    db_type: str


@dataclass(frozen=True)
class Services:
    """What the gRPC servicers call."""

    agents: AgentService
    jobs: JobService
    system: SystemService


class SystemService:
    """Reports on the service itself."""

    def __init__(
        self, check_database: Callable[[], None], *, db_type: str, clock: Clock = utc_now
    ) -> None:
        self._check_database = check_database
        self._db_type = db_type
        self._clock = clock

    def health(self) -> Health:
        """Healthy when the database answers; raises Unavailable otherwise."""
        self._check_database()
        return Health(version=agentq_version(), checked_at=self._clock(), db_type=self._db_type)


def agentq_version() -> str:
    """The installed agentq version."""
    try:
        return metadata.version("agentq")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


class AgentService:
    """Create, read, list and delete agents within the caller's tenant."""

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        *,
        clock: Clock = utc_now,
        page_tokens: PageTokens | None = None,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._tokens = page_tokens or PageTokens()

    def create_agent(self, principal: Principal, spec: AgentSpec) -> Agent:
        """Store a new agent for the caller's tenant."""
        agent = Agent(
            id=str(uuid.uuid4()),
            tenant_id=principal.tenant_id,
            name=spec.name,
            role=spec.role,
            max_depth=spec.max_depth,
            spawn_shadow=spec.spawn_shadow,
            generation=0,
            fitness=0.0,
            created_at=self._clock(),
        )
        with self._uow() as uow:
            uow.agents.add(agent)
            uow.commit()
        return agent

    def get_agent(self, principal: Principal, agent_id: str) -> Agent:
        """The caller's agent; NOT_FOUND for unknown ids and other tenants' alike."""
        with self._uow() as uow:
            agent = uow.agents.get(agent_id, tenant_id=principal.tenant_id)
        if agent is None:
            raise NotFound(AGENT_NOT_FOUND)
        return agent

    def list_agents(self, principal: Principal, *, size: int | None, token: str) -> Page[Agent]:
        """A page of the caller's agents, newest first."""
        limit = page_size(size)
        scope = f"agents:{principal.tenant_id}"
        after = self._tokens.decode(token, scope=scope)
        with self._uow() as uow:
            rows = uow.agents.page(principal.tenant_id, after=after, limit=limit + 1)
        return self._tokens.page_of(
            rows, limit=limit, scope=scope, cursor=lambda a: Cursor(a.created_at, a.id)
        )

    def delete_agent(self, principal: Principal, agent_id: str) -> None:
        """Delete the agent and cancel its unfinished jobs; finished ones stay readable."""
        now = self._clock()
        with self._uow() as uow:
            agent = uow.agents.get(agent_id, tenant_id=principal.tenant_id)
            if agent is None:
                raise NotFound(AGENT_NOT_FOUND)
            agent.deleted_at = now
            cancel_tree(uow, uow.jobs.unfinished_of_agent(agent_id), at=now)
            uow.commit()
