"""The agent side of the service layer: create, read, list and delete agents."""

from __future__ import annotations

import uuid

from server import metrics
from server.auth.principal import Principal
from server.clock import Clock, utc_now
from server.errors import NotFound
from server.paging import Cursor, Page, PageTokens, page_size
from server.prompt_guard import PromptGuard
from server.service.jobs import AGENT_NOT_FOUND, cancel_tree
from server.store.records import AgentRecord
from server.store.store import Store
from server.validation import AgentSpec


class AgentService:
    """Create, read, list and delete agents within the caller's tenant."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = utc_now,
        page_tokens: PageTokens | None = None,
        prompt_guard: PromptGuard | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._tokens = page_tokens or PageTokens()
        self._guard = prompt_guard or PromptGuard()

    async def create_agent(self, principal: Principal, spec: AgentSpec) -> AgentRecord:
        """Store a new agent for the caller's tenant, once the prompt guard has read it."""
        self._guard.check_agent(name=spec.name, role=spec.role)
        agent = AgentRecord(
            id=str(uuid.uuid4()),
            tenant_id=principal.tenant_id,
            name=spec.name,
            role=spec.role,
            max_depth=spec.max_depth,
            spawn_shadow=spec.spawn_shadow,
            generation=0,
            fitness=0.0,
            created_at=self._clock(),
            deleted_at=None,
            verification=spec.verification.to_json(),
        )
        await self._store.agents.add(agent)
        metrics.agent_created()
        return agent

    async def get_agent(self, principal: Principal, agent_id: str) -> AgentRecord:
        """The caller's agent; NOT_FOUND for unknown ids and other tenants' alike."""
        agent = await self._store.agents.get(agent_id, tenant_id=principal.tenant_id)
        if agent is None:
            raise NotFound(AGENT_NOT_FOUND)
        return agent

    async def list_agents(
        self, principal: Principal, *, size: int | None, token: str
    ) -> Page[AgentRecord]:
        """A page of the caller's agents, newest first."""
        limit = page_size(size)
        scope = f"agents:{principal.tenant_id}"
        after = self._tokens.decode(token, scope=scope)
        rows = await self._store.agents.page(principal.tenant_id, after=after, limit=limit + 1)
        return self._tokens.page_of(
            rows, limit=limit, scope=scope, cursor=lambda a: Cursor(a.created_at, a.id)
        )

    async def delete_agent(self, principal: Principal, agent_id: str) -> None:
        """Delete the agent and cancel its unfinished jobs; finished ones stay readable."""
        now = self._clock()
        async with self._store.transaction() as tx:
            if not await tx.agents.delete(agent_id, tenant_id=principal.tenant_id, at=now):
                raise NotFound(AGENT_NOT_FOUND)
            unfinished = await tx.jobs.unfinished_of_agent(agent_id)
            cancelled = await cancel_tree(tx, unfinished, at=now)
        metrics.jobs_counted("cancelled", principal.tenant_id, cancelled)
