"""API keys, tenant limits and the token exchange: the service layer of access control."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from server.auth.principal import ROLES, Principal, is_tenant_id
from server.auth.tokens import LEEWAY_S, mint_token
from server.clock import Clock, utc_now
from server.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from server.ratelimit import Tier
from server.store.records import ApiKeyRecord, LimitRecord
from server.store.store import Store

# `keys:write` manages the tenant's own keys (ApiKeyService); see README, Self-service API keys.
SCOPES = ("agents:read", "agents:write", "jobs:read", "jobs:write", "keys:write")
KEY_PREFIX = "agq_"
INVALID_KEY = "Invalid API key"
SCOPE_NOT_HELD = "Cannot grant scope(s) the caller does not hold"
OUTLIVES_CALLER = "Cannot grant a key that expires after the caller's own key"
MAX_LIFETIME_S = 10 * 365 * 86400
# How stale the set of revoked keys may be: a token exchanged for a key is refused
# this soon after the key's revocation, on every replica.
REVOCATION_REFRESH_S = 0.5
# last_used_at is written at most this often per key, not on every request.
TOUCH_EVERY = timedelta(seconds=60)
# Keys whose own tier (immutable) a replica remembers; forgotten all at once past this.
KEY_TIER_CACHE = 10_000


@dataclass(frozen=True)
class NewKey:
    """An API key to create."""

    tenant_id: str
    name: str | None  # None: the key's prefix names it
    role: str
    scopes: Sequence[str]
    lifetime_s: int | None
    # When it expires, for callers that name the time rather than a lifetime.
    expires_at: datetime | None = None
    # The key's own rate-limit tier, besides its tenant's; None for none.
    tier: str | None = None


@dataclass(frozen=True)
class Limits:
    """The limits in force for a tenant."""

    tenant_id: str
    tier_name: str
    tier: Tier
    max_unfinished_jobs: int | None


_BAD_TENANT = "Invalid tenant_id: must be 1 to 255 characters, without NUL"


def check_tenant(tenant_id: str) -> str:
    """A tenant id as the admin API accepts it, else INVALID_ARGUMENT."""
    if not is_tenant_id(tenant_id):
        raise InvalidArgument.field("tenant_id", _BAD_TENANT)
    return tenant_id


def tier_violation(tier: str, tiers: Mapping[str, Tier]) -> FieldViolation:
    """The error of a tier that is not configured."""
    return FieldViolation("tier", f"Invalid tier: {tier!r}. Valid: {sorted(tiers)}")


def _check_key_request(new: NewKey, tiers: Mapping[str, Tier], now: datetime) -> list[str]:
    violations: list[tuple[str, str]] = []
    if not is_tenant_id(new.tenant_id):
        violations.append(("tenant_id", _BAD_TENANT))
    name = None if new.name is None else new.name.strip()
    if name is not None and (not 1 <= len(name) <= 100 or "\x00" in name):
        message = "Invalid name: must be 1 to 100 characters after trimming, without NUL"
        violations.append(("name", message))
    if new.role not in ROLES:
        violations.append(("role", f"Invalid role: must be one of {', '.join(ROLES)}"))
    unknown = [s for s in new.scopes if s not in SCOPES]
    if unknown or not new.scopes:
        violations.append(("scopes", f"Invalid scope(s): {unknown}. Valid: {list(SCOPES)}"))
    if new.lifetime_s is not None and not 1 <= new.lifetime_s <= MAX_LIFETIME_S:
        message = f"Invalid lifetime_seconds: must be between 1 and {MAX_LIFETIME_S}"
        violations.append(("lifetime_seconds", message))
    if new.expires_at is not None and new.expires_at <= now:
        violations.append(("expires_at", "Invalid expires_at: must be in the future"))
    elif new.expires_at is not None and new.expires_at > now + timedelta(seconds=MAX_LIFETIME_S):
        message = f"Invalid expires_at: must be at most {MAX_LIFETIME_S} seconds ahead"
        violations.append(("expires_at", message))
    found = [FieldViolation(f, d) for f, d in violations]
    if new.tier is not None and new.tier not in tiers:
        found.append(tier_violation(new.tier, tiers))
    if found:
        raise InvalidArgument(found)
    return list(dict.fromkeys(new.scopes))


class AccessService:
    """Creates, lists, revokes and checks API keys; reads and sets tenant limits."""

    def __init__(
        self,
        store: Store,
        *,
        pepper: bytes,
        tiers: Mapping[str, Tier],
        default_tier: str,
        max_unfinished_jobs: int | None,
        tier_cache_s: float = 5.0,
        token_lifetime_s: int = 900,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._pepper = pepper
        self._tiers = dict(tiers)
        self._default_tier = default_tier
        self._max_unfinished_jobs = max_unfinished_jobs
        self._tier_cache_s = tier_cache_s
        self._tier_cache: dict[str, tuple[float, str]] = {}
        self._clock = clock
        # Keys revoked while a token made from them could still be alive.
        self._token_lifetime_s = token_lifetime_s
        self._ended: set[str] = set()
        self._ended_read_at = -math.inf
        self._ended_lock = asyncio.Lock()
        self._key_tiers: dict[str, str | None] = {}

    def digest(self, key: str) -> str:
        """HMAC-SHA256 of a key with the pepper: what is stored instead of the key."""
        return hmac.new(self._pepper, key.encode("utf-8"), hashlib.sha256).hexdigest()

    async def create_key(
        self,
        new: NewKey,
        *,
        held: frozenset[str] | None = None,
        not_after: datetime | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """Store a new key's digest and return its row and the key, shown this once.

        `held`: the scopes of a caller that may grant only those (self-service), checked
        after the field rules; None for the operator, who may grant any. `not_after`: when
        the caller's own key expires, past which the new key may not live (a key that
        expires must not buy one that does not); None when the caller's never does.
        """
        now = self._clock()
        scopes = _check_key_request(new, self._tiers, now)
        wider = [scope for scope in scopes if held is not None and scope not in held]
        if wider:
            raise PermissionDenied(f"{SCOPE_NOT_HELD}: {wider}")
        expires = now + timedelta(seconds=new.lifetime_s) if new.lifetime_s else new.expires_at
        if not_after is not None and (expires is None or expires > not_after):
            raise PermissionDenied(OUTLIVES_CALLER)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        prefix = key[: len(KEY_PREFIX) + 4]
        row = ApiKeyRecord(
            id=str(uuid.uuid4()),
            tenant_id=new.tenant_id,
            name=prefix if new.name is None else new.name.strip(),
            role=new.role,
            scopes=" ".join(scopes),
            digest=self.digest(key),
            prefix=prefix,
            created_at=now,
            last_used_at=None,
            expires_at=expires,
            revoked_at=None,
            tier=new.tier,
        )
        await self._store.api_keys.add(row)
        return row, key

    async def list_keys(self, tenant_id: str | None) -> Sequence[ApiKeyRecord]:
        """Keys' metadata, newest first."""
        if tenant_id is not None:
            check_tenant(tenant_id)
        return await self._store.api_keys.all(tenant_id=tenant_id)

    async def revoke_key(self, key_id: str, *, tenant_id: str | None = None) -> None:
        """Revoke a key (of `tenant_id` only, when given: another's is not found); checked
        on every request, so every replica refuses it at once.

        Tokens exchanged for it are refused too: at once here, and within
        REVOCATION_REFRESH_S on other replicas (`has_ended`).
        """
        async with self._store.transaction() as tx:
            row = await tx.api_keys.get(key_id)
            if row is None or tenant_id not in (None, row.tenant_id):
                raise NotFound("API key not found")
            await tx.api_keys.revoke(key_id, at=self._clock())
        self._ended.add(key_id)

    async def has_ended(self, key_id: str) -> bool:
        """Whether the key a token was exchanged for has been revoked or has expired.

        A token expires with its key, but JWT checks allow clocks LEEWAY_S of skew; this
        check allows none. It reads a set of the keys that ended while a token could
        still be alive, read again from the database once it is REVOCATION_REFRESH_S
        old: one small query per replica that often, instead of one per request.
        """
        if time.monotonic() - self._ended_read_at >= REVOCATION_REFRESH_S:
            async with self._ended_lock:
                if time.monotonic() - self._ended_read_at >= REVOCATION_REFRESH_S:
                    await self._read_ended()
        return key_id in self._ended

    async def _read_ended(self) -> None:
        started = time.monotonic()
        now = self._clock()
        since = now - timedelta(seconds=self._token_lifetime_s + LEEWAY_S)
        self._ended = set(await self._store.api_keys.ended_since(since, now=now))
        self._ended_read_at = started

    async def verify(self, key: str) -> Principal:
        """The caller a live key stands for; Unauthenticated("Invalid API key") otherwise."""
        now = self._clock()
        row = await self._store.api_keys.by_digest(self.digest(key))
        live = (
            row is not None
            and row.revoked_at is None
            and (row.expires_at is None or row.expires_at > now)
        )
        if not live or row is None:
            raise Unauthenticated(INVALID_KEY)
        self._remember_tier(row.id, row.tier)
        if row.last_used_at is None or row.last_used_at < now - TOUCH_EVERY:
            await self._store.api_keys.touch(row.id, now=now, older_than=now - TOUCH_EVERY)
        return Principal(
            subject=f"apikey:{row.id}",
            role=row.role,
            tenant_id=row.tenant_id,
            scopes=frozenset(row.scopes.split()),
            api_key_id=row.id,
            key_expires_at=row.expires_at,
        )

    def _remember_tier(self, key_id: str, tier: str | None) -> None:
        if len(self._key_tiers) >= KEY_TIER_CACHE:
            self._key_tiers.clear()
        self._key_tiers[key_id] = tier

    async def key_limits(self, key_id: str | None) -> tuple[str, Tier] | None:
        """The key's id and own tier, when the caller used a key (or a token made from
        one) that has a tier; a key's tier never changes, so it is read once per replica.
        """
        if key_id is None:
            return None
        if key_id not in self._key_tiers:
            row = await self._store.api_keys.get(key_id)
            self._remember_tier(key_id, None if row is None else row.tier)
        tier = self._key_tiers[key_id]
        # A tier the operator has since removed from the configuration limits nothing.
        return None if tier is None or tier not in self._tiers else (key_id, self._tiers[tier])

    async def limits(self, tenant_id: str) -> Limits:
        """The limits in force for a tenant: its overrides, else the defaults."""
        check_tenant(tenant_id)
        return self._limits_of(tenant_id, await self._store.limits.get(tenant_id))

    async def set_limits(
        self, tenant_id: str, *, tier: str | None, max_unfinished: int | None
    ) -> Limits:
        """Change a tenant's tier and/or cap; the rest stays."""
        check_tenant(tenant_id)
        if tier is not None and tier not in self._tiers:
            raise InvalidArgument([tier_violation(tier, self._tiers)])
        if max_unfinished is not None and max_unfinished < 0:
            message = "Invalid max_unfinished_jobs: must be 0 or more"
            raise InvalidArgument.field("max_unfinished_jobs", message)
        async with self._store.transaction() as tx:
            # Created if absent the same way a racing capped submit creates it.
            row = await tx.limits.lock(tenant_id)
            row = LimitRecord(
                tenant_id,
                row.tier if tier is None else tier,
                row.max_unfinished_jobs if max_unfinished is None else max_unfinished,
            )
            await tx.limits.set(row)
        self._tier_cache.pop(tenant_id, None)
        return self._limits_of(tenant_id, row)

    def cached_tier(self, tenant_id: str) -> Tier | None:
        """The tenant's bucket size if the cache holds it still; None means ask tier_of."""
        cached = self._tier_cache.get(tenant_id)
        if cached is None or cached[0] < time.monotonic():
            return None
        return self._tiers[cached[1]]

    async def tier_of(self, tenant_id: str) -> Tier:
        """The tenant's bucket size, cached for a few seconds (read on every request)."""
        now = time.monotonic()
        cached = self._tier_cache.get(tenant_id)
        if cached is None or cached[0] < now:
            name = (await self.limits(tenant_id)).tier_name
            cached = (now + self._tier_cache_s, name)
            self._tier_cache[tenant_id] = cached
        return self._tiers[cached[1]]

    def _limits_of(self, tenant_id: str, row: LimitRecord | None) -> Limits:
        name = row.tier if row is not None and row.tier in self._tiers else self._default_tier
        cap = self._max_unfinished_jobs
        if row is not None and row.max_unfinished_jobs is not None:
            cap = row.max_unfinished_jobs
        return Limits(tenant_id, name, self._tiers[name], cap)


class TokenIssuer:
    """Mints short-lived JWTs for callers that proved themselves with an API key."""

    def __init__(
        self, *, secret: str, issuer: str, lifetime_s: int, clock: Clock = utc_now
    ) -> None:
        self._secret = secret
        self._issuer = issuer
        self._lifetime_s = lifetime_s
        self._clock = clock

    def exchange(self, principal: Principal) -> tuple[str, datetime, int]:
        """A JWT with the key's tenant, role and scopes; when it expires, and in how long.

        It names its key, so revoking the key ends it, and it expires no later than
        the key does.
        """
        issued_at = int(self._clock().timestamp())
        expires_at = issued_at + self._lifetime_s
        if principal.key_expires_at is not None:
            expires_at = min(expires_at, math.floor(principal.key_expires_at.timestamp()))
        token = mint_token(
            secret=self._secret,
            subject=principal.subject,
            role=principal.role,
            issuer=self._issuer,
            tenant_id=principal.tenant_id,
            lifetime_s=expires_at - issued_at,
            scopes=sorted(principal.scopes or ()),
            api_key_id=principal.api_key_id,
            now=issued_at,
        )
        return token, datetime.fromtimestamp(expires_at, UTC), expires_at - issued_at
