"""Calls through the guard, for its tests: a guard on a world's store, and credentials."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from server.api.guard import Admission, Guard, JwtSettings
from server.auth.tokens import mint_token
from server.errors import AgentQError, Unavailable
from server.ratelimit import Decision, MemoryRateLimiter, RateLimiter, Tier
from server.service.access import SCOPES, AccessService, NewKey
from server.store.store import Store
from tests.fakes.clock import FakeClock

SECRET = "unit-test-secret-long-enough-for-hs256-signing!!"
ISSUER = "agentq-test"
ADMIN_TOKEN = "operator-admin-token-0123456789"
PEPPER = b"unit-test-pepper"
TIERS = {
    "roomy": Tier(rate=1_000, burst=1_000),
    "tiny": Tier(rate=1, burst=3),
}
CREATE_AGENT = "/agentq.v1.AgentService/CreateAgent"
EXECUTE = "/agentq.v1.AgentService/Execute"
CREATE_TOKEN = "/agentq.v1.TokenService/CreateToken"


def make_access(store: Store, clock: FakeClock) -> AccessService:
    """The access service the guard asks: tiers "roomy" (the default) and "tiny"."""
    return AccessService(
        store,
        pepper=PEPPER,
        tiers=TIERS,
        default_tier="roomy",
        max_unfinished_jobs=None,
        clock=clock,
    )


def make_guard(
    access: AccessService,
    *,
    limiter: RateLimiter | None = None,
    admin_token: str | None = ADMIN_TOKEN,
) -> Guard:
    """A guard over `access`, with a MemoryRateLimiter unless told another."""
    return Guard(
        jwt=JwtSettings(SECRET, ISSUER, None),
        access=access,
        limiter=limiter or MemoryRateLimiter(),
        admin_token=admin_token,
    )


async def admit(guard: Guard, method: str, metadata: Mapping[str, Any] | None = None) -> Admission:
    """The admission of a call that passed; the guard's error otherwise."""
    admission = Admission()
    await guard.admit(method, metadata or {}, admission)
    return admission


async def refusal(
    guard: Guard, method: str, metadata: Mapping[str, Any] | None = None
) -> AgentQError:
    """The error the guard refuses a call with."""
    with pytest.raises(AgentQError) as caught:
        await admit(guard, method, metadata)
    return caught.value


def bearer(role: str = "user", tenant: str = "acme", **extra: Any) -> dict[str, str]:
    """Metadata with an operator's JWT for alice."""
    token = mint_token(
        secret=SECRET, subject="alice", role=role, issuer=ISSUER, tenant_id=tenant, **extra
    )
    return {"authorization": f"Bearer {token}"}


async def new_key(
    access: AccessService,
    *,
    scopes: tuple[str, ...] = SCOPES,
    role: str = "user",
    tenant: str = "acme",
) -> str:
    """A new API key of the tenant."""
    _, key = await access.create_key(NewKey(tenant, "guard test", role, scopes, None))
    return key


class UnreachableLimiter:
    """A limiter whose store does not answer."""

    async def take(
        self, tenant_id: str, tier: Tier, key: tuple[str, Tier] | None = None
    ) -> Decision:
        raise Unavailable("Rate limiter unavailable")

    async def close(self) -> None:
        pass


class CountingLimiter(MemoryRateLimiter):
    """A MemoryRateLimiter that counts its takes."""

    def __init__(self) -> None:
        super().__init__()
        self.takes = 0

    async def take(
        self, tenant_id: str, tier: Tier, key: tuple[str, Tier] | None = None
    ) -> Decision:
        self.takes += 1
        return await super().take(tenant_id, tier, key)
