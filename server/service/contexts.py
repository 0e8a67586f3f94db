"""The context side of the service layer: read and delete a tenant's conversation contexts.

Turns are added by the worker, with each completion of a job that has a context. A
context is the caller's tenant's: any other tenant's context of the same name is a
different one, so every name reads as a context, empty until a turn is stored in it.
"""

from __future__ import annotations

import json

from server.auth.principal import Principal
from server.paging import Cursor, Page, PageTokens, page_size
from server.store.records import TurnRecord
from server.store.store import Store


class ContextService:
    """Read and delete the turns of the caller's tenant's contexts."""

    def __init__(self, store: Store, *, page_tokens: PageTokens | None = None) -> None:
        self._store = store
        self._tokens = page_tokens or PageTokens()

    async def get_context(
        self, principal: Principal, context_id: str, *, size: int | None, token: str
    ) -> Page[TurnRecord]:
        """A page of the context's turns, oldest first (the order a provider sees them)."""
        limit = page_size(size)
        # A list: names may hold ':', and a token must not pass from one context to another.
        scope = json.dumps(["contexts", principal.tenant_id, context_id])
        after = self._tokens.decode(token, scope=scope)
        rows = await self._store.contexts.page(
            principal.tenant_id, context_id, after=after, limit=limit + 1
        )
        return self._tokens.page_of(
            rows, limit=limit, scope=scope, cursor=lambda t: Cursor(t.created_at, t.job_id)
        )

    async def delete_context(self, principal: Principal, context_id: str) -> int:
        """Remove every turn of the context; how many there were (0 for an empty one)."""
        return await self._store.contexts.delete(principal.tenant_id, context_id)
