"""Self-service API keys: a caller with `keys:write` manages its own tenant's keys
(README, Self-service API keys), through the same minting and revocation as the admin API.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from server.auth.principal import Principal
from server.paging import Cursor, Page, PageTokens
from server.service.access import SCOPES, AccessService, NewKey
from server.store.records import ApiKeyRecord
from server.store.store import Store


def held_scopes(principal: Principal) -> frozenset[str]:
    """The scopes a caller holds: an API key's (or a token made from one) are its own; a
    JWT minted by the operator is limited by its role alone, so it holds every scope.
    """
    return frozenset(SCOPES) if principal.scopes is None else principal.scopes


class OwnKeys:
    """Create, list and revoke the keys of the caller's tenant."""

    def __init__(self, access: AccessService, store: Store, page_tokens: PageTokens) -> None:
        self._access = access
        self._store = store
        self._tokens = page_tokens

    async def create(
        self,
        principal: Principal,
        *,
        name: str | None,
        scopes: Sequence[str],
        expires_at: datetime | None,
        tier: str | None,
    ) -> tuple[ApiKeyRecord, str]:
        """A key for the caller's tenant with the caller's role, scopes it holds itself, and
        an expiry no later than its own key's."""
        new = NewKey(
            tenant_id=principal.tenant_id,
            name=name,
            role=principal.role,
            scopes=scopes,
            lifetime_s=None,
            expires_at=expires_at,
            tier=tier,
        )
        return await self._access.create_key(
            new, held=held_scopes(principal), not_after=await self._expiry(principal)
        )

    async def _expiry(self, principal: Principal) -> datetime | None:
        """When the caller's key expires, for a key and a token exchanged for one alike (a
        token does not carry it); None for a key that never does and the operator's JWT."""
        if principal.api_key_id is None:
            return None
        row = await self._store.api_keys.get(principal.api_key_id)
        return None if row is None else row.expires_at

    async def list(
        self, principal: Principal, *, size: int | None, token: str
    ) -> Page[ApiKeyRecord]:
        """A page of the tenant's keys, newest first, revoked and expired ones included."""
        tenant = principal.tenant_id

        async def fetch(after: Cursor | None, limit: int) -> list[ApiKeyRecord]:
            return await self._store.api_keys.page(tenant, after=after, limit=limit)

        return await self._tokens.fetch_page(
            size=size,
            token=token,
            scope=f"api-keys:{tenant}",
            fetch=fetch,
            cursor=lambda k: Cursor(k.created_at, k.id),
        )

    async def revoke(self, principal: Principal, key_id: str) -> None:
        """Revoke one of the tenant's keys; another tenant's is not found."""
        await self._access.revoke_key(key_id, tenant_id=principal.tenant_id)
