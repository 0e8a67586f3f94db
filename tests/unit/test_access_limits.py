"""Tenant limits (tier and cap, cached tier) and the exchange of a key for a token.

AccessService and TokenIssuer run on the real store of a world (in-memory SQLite) and
its clock.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import insert

from server.auth.principal import Principal
from server.auth.tokens import LEEWAY_S, verify_bearer
from server.errors import FieldViolation, InvalidArgument, Unauthenticated
from server.ratelimit import Tier
from server.service.access import AccessService, Limits, NewKey, TokenIssuer
from server.store.tables import tenant_limits
from tests.fakes.clock import FakeClock
from tests.world import START, World

PEPPER = b"unit-test-pepper-0123456789abcdef"
TIERS = {"free": Tier(rate=2, burst=20), "standard": Tier(rate=100, burst=200)}
SECRET = "unit-test-secret-long-enough-for-hs256-signing!!"
ISSUER = "agentq-test"


def _access(
    world: World, *, tier_cache_s: float = 5.0, max_unfinished_jobs: int | None = None
) -> AccessService:
    return AccessService(
        world.store,
        pepper=PEPPER,
        tiers=TIERS,
        default_tier="free",
        max_unfinished_jobs=max_unfinished_jobs,
        tier_cache_s=tier_cache_s,
        clock=world.clock,
    )


@pytest.fixture
def access(world: World) -> AccessService:
    return _access(world)


# Tenant limits.


async def test_a_tenant_without_overrides_gets_the_default_tier_and_cap(world: World) -> None:
    access = _access(world, max_unfinished_jobs=100)

    assert await access.limits("acme") == Limits("acme", "free", TIERS["free"], 100)


async def test_setting_a_tier_keeps_the_default_cap_and_setting_a_cap_keeps_the_tier(
    world: World,
) -> None:
    access = _access(world, max_unfinished_jobs=100)

    assert await access.set_limits("acme", tier="standard", max_unfinished=None) == Limits(
        "acme", "standard", TIERS["standard"], 100
    )
    assert await access.set_limits("acme", tier=None, max_unfinished=7) == Limits(
        "acme", "standard", TIERS["standard"], 7
    )
    assert await access.limits("acme") == Limits("acme", "standard", TIERS["standard"], 7)
    assert await access.limits("globex") == Limits("globex", "free", TIERS["free"], 100)


async def test_a_cap_of_zero_is_a_cap_not_the_default(world: World) -> None:
    access = _access(world, max_unfinished_jobs=100)

    await access.set_limits("acme", tier=None, max_unfinished=0)

    assert (await access.limits("acme")).max_unfinished_jobs == 0


async def test_an_unknown_tier_is_refused_with_the_valid_ones_listed(
    access: AccessService, world: World
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await access.set_limits("acme", tier="gold", max_unfinished=5)

    message = "Invalid tier: 'gold'. Valid: ['free', 'standard']"
    assert caught.value.violations == [FieldViolation("tier", message)]
    assert await world.store.limits.get("acme") is None


async def test_a_negative_cap_is_refused(access: AccessService, world: World) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await access.set_limits("acme", tier="standard", max_unfinished=-1)

    message = "Invalid max_unfinished_jobs: must be 0 or more"
    assert caught.value.violations == [FieldViolation("max_unfinished_jobs", message)]
    assert await world.store.limits.get("acme") is None


async def test_limits_of_an_empty_tenant_id_are_refused(access: AccessService) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await access.set_limits("", tier="standard", max_unfinished=None)
    assert caught.value.message == "Invalid tenant_id: must be 1 to 255 characters, without NUL"


async def test_the_tier_is_cached_for_a_moment_then_read_again(world: World) -> None:
    access = _access(world, tier_cache_s=0.05)
    assert await access.tier_of("acme") == TIERS["free"]
    # Another replica's change, straight to the database.
    await world.store.db.run(insert(tenant_limits), {"tenant_id": "acme", "tier": "standard"})

    assert await access.tier_of("acme") == TIERS["free"]
    assert access.cached_tier("acme") == TIERS["free"]
    await asyncio.sleep(0.06)
    assert access.cached_tier("acme") is None
    assert await access.tier_of("acme") == TIERS["standard"]


async def test_setting_a_tier_here_takes_effect_at_once_despite_the_cache(
    access: AccessService,
) -> None:
    assert await access.tier_of("acme") == TIERS["free"]

    await access.set_limits("acme", tier="standard", max_unfinished=None)

    assert access.cached_tier("acme") is None
    assert await access.tier_of("acme") == TIERS["standard"]


# The token exchange.


def _issuer(clock: FakeClock, lifetime_s: int = 900) -> TokenIssuer:
    return TokenIssuer(secret=SECRET, issuer=ISSUER, lifetime_s=lifetime_s, clock=clock)


async def test_an_exchanged_token_carries_the_keys_tenant_role_and_scopes(
    access: AccessService, world: World
) -> None:
    new = NewKey("globex", "CI deploys", "agent", ("jobs:write", "agents:read"), None)
    _, key = await access.create_key(new)
    principal = await access.verify(key)

    token, expires_at, lifetime_s = _issuer(world.clock).exchange(principal)

    assert expires_at == START + timedelta(seconds=900)
    assert lifetime_s == 900
    now = START.timestamp()
    assert verify_bearer(f"Bearer {token}", secret=SECRET, issuer=ISSUER, now=now) == principal


def test_an_exchanged_token_expires_after_its_lifetime() -> None:
    principal = Principal("apikey:1", "user", "acme", frozenset({"jobs:read"}))
    token, expires_at, _ = _issuer(FakeClock(), lifetime_s=300).exchange(principal)
    header = f"Bearer {token}"
    last_moment = expires_at.timestamp() + LEEWAY_S - 1

    assert verify_bearer(header, secret=SECRET, issuer=ISSUER, now=last_moment) == principal
    with pytest.raises(Unauthenticated) as caught:
        verify_bearer(header, secret=SECRET, issuer=ISSUER, now=last_moment + 1)
    assert caught.value.message == "Token expired"


def test_a_key_without_scopes_left_still_exchanges_to_a_scoped_token() -> None:
    # A principal limited by scopes must never become an unscoped (role-only) token.
    principal = Principal("apikey:1", "user", "acme", frozenset())
    token, _, _ = _issuer(FakeClock()).exchange(principal)

    found = verify_bearer(f"Bearer {token}", secret=SECRET, issuer=ISSUER, now=START.timestamp())

    assert found.scopes == frozenset()
