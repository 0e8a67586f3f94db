"""The checks before an RPC runs: admin token, credentials, role, scope and rate limit."""

from __future__ import annotations

import hmac
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from server.api import policy
from server.api.failures import FailureThrottle, client_address
from server.auth.principal import Principal, require_role, require_scope
from server.auth.tokens import INVALID_HEADER_FORMAT, BearerVerifier
from server.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from server.ratelimit import RateLimiter
from server.service.access import INVALID_KEY, KEY_PREFIX, AccessService

ADMIN_DENIED = "Invalid or missing admin token."
MISSING_KEY = "Missing API key"
TOO_MANY = "Too many requests"
_BEARER_KEY = re.compile(r"bearer (agq_\S+)", re.IGNORECASE)


@dataclass(frozen=True)
class JwtSettings:
    """How JWTs are checked."""

    secret: str
    issuer: str
    audience: str | None
    # The longest `exp - iat` accepted; None for no limit.
    max_ttl_s: int | None = None


@dataclass
class Admission:
    """The outcome of the checks: the caller, and metadata for the response trailers."""

    principal: Principal | None = None
    trailers: list[tuple[str, str]] = field(default_factory=list)


class Guard:
    """Decides whether one call may run; raises the error that says why not."""

    def __init__(
        self,
        *,
        jwt: JwtSettings,
        access: AccessService,
        limiter: RateLimiter,
        admin_token: str | None,
        failure_burst: int = 20,
        trusted_proxies: Collection[str] = ("127.0.0.1", "::1"),
    ) -> None:
        self._bearer = BearerVerifier(
            secret=jwt.secret, issuer=jwt.issuer, audience=jwt.audience, max_ttl_s=jwt.max_ttl_s
        )
        self._access = access
        self._limiter = limiter
        self._admin_token = admin_token.encode() if admin_token else None
        self._failures = FailureThrottle(failure_burst)
        self._trusted_proxies = frozenset(trusted_proxies)

    async def admit(
        self,
        method: str,
        metadata: Mapping[str, Any],
        admission: Admission,
        *,
        repeated: Collection[str] = (),
        peer: str = "",
    ) -> None:
        """Run every check for `method`; fills `admission` as it goes.

        `repeated` names the metadata keys the caller sent more than once; `peer` is the
        gRPC peer, whose failed credential checks are throttled (`failures.py`).
        """
        if method in policy.PUBLIC:
            return
        if method in policy.ADMIN:
            # Two admin tokens are no admin token: neither is picked over the other.
            ambiguous = "x-admin-api-key" in repeated
            self._check_admin(None if ambiguous else metadata.get("x-admin-api-key"))
            return
        access = policy.ACCESS.get(method)
        if access is None:
            raise PermissionDenied("Insufficient permissions")  # fail closed
        address = client_address(peer, metadata, self._trusted_proxies)
        self._failures.check(address)
        try:
            _refuse_ambiguous(repeated)
            principal = await self._authenticate(method, metadata)
        except Unauthenticated:
            self._failures.failed(address)
            raise
        if access.roles is not None:
            require_role(principal, access.roles)
        require_scope(principal, access.scope)
        tier = self._access.cached_tier(principal.tenant_id)
        if tier is None:
            tier = await self._access.tier_of(principal.tenant_id)
        decision = await self._limiter.take(principal.tenant_id, tier)
        admission.trailers += [
            ("x-ratelimit-limit", str(decision.limit)),
            ("x-ratelimit-remaining", str(decision.remaining)),
            ("x-ratelimit-reset", str(decision.reset_at)),
        ]
        if not decision.allowed:
            raise ResourceExhausted(
                TOO_MANY,
                retry_after_s=decision.retry_after_s,
                subject=f"tenant:{principal.tenant_id}",
                limit=f"{tier.burst} requests at once, refilled at {tier.rate:g} per second",
            )
        admission.principal = principal

    def _check_admin(self, sent: object) -> None:
        # Constant-time, and closed when no admin token is configured.
        if self._admin_token is None or not isinstance(sent, str):
            raise PermissionDenied(ADMIN_DENIED)
        if not hmac.compare_digest(sent.encode(), self._admin_token):
            raise PermissionDenied(ADMIN_DENIED)

    @staticmethod
    def _api_key(metadata: Mapping[str, Any]) -> str | None:
        """The API key the caller sent, as `x-api-key` or `authorization: Bearer agq_...`."""
        key = metadata.get("x-api-key")
        if key is not None:
            return str(key)
        authorization = metadata.get("authorization")
        match = _BEARER_KEY.fullmatch(authorization) if isinstance(authorization, str) else None
        return match.group(1) if match else None

    async def _authenticate(self, method: str, metadata: Mapping[str, Any]) -> Principal:
        authorization = metadata.get("authorization")
        key = self._api_key(metadata)
        if method in policy.KEY_EXCHANGE:
            if key is None:
                raise Unauthenticated(INVALID_KEY if authorization else MISSING_KEY)
            return await self._access.verify(key)
        if key is not None:
            if not key.startswith(KEY_PREFIX):
                raise Unauthenticated(INVALID_KEY)
            return await self._access.verify(key)
        principal = self._bearer.verify(authorization if isinstance(authorization, str) else None)
        if principal.api_key_id is not None and await self._access.has_ended(principal.api_key_id):
            # A token made from a key ends with it: its caller is the key's.
            raise Unauthenticated(INVALID_KEY)
        return principal


def _refuse_ambiguous(repeated: Collection[str]) -> None:
    """Refuse a credential sent twice: whichever copy a proxy or client reads, none is chosen."""
    if "authorization" in repeated:
        raise Unauthenticated(INVALID_HEADER_FORMAT)
    if "x-api-key" in repeated:
        raise Unauthenticated(INVALID_KEY)
