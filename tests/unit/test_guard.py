"""The guard lets a call run only with the right credentials, role, scope and rate.

The guard runs on the real AccessService over the fakes, a real Blocking pool, and a
MemoryRateLimiter or a limiter scripted to fail.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import pkgutil
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from google.protobuf.descriptor import FileDescriptor

import agentq.v1
from server.access import SCOPES, AccessService, NewKey
from server.api import policy
from server.api.blocking import Blocking
from server.api.guard import Admission, Guard, JwtSettings
from server.auth.tokens import mint_token
from server.errors import (
    AgentQError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from server.ratelimit import Decision, MemoryRateLimiter, RateLimiter, Tier
from server.unit_of_work import UnitOfWork
from tests.unit.fakes import FakeClock, FakeStore

SECRET = "unit-test-secret-long-enough-for-hs256-signing!!"
ISSUER = "agentq-test"
ADMIN_TOKEN = "operator-admin-token-0123456789"
PEPPER = b"unit-test-pepper"
TIERS = {
    "roomy": Tier(rate=1_000, burst=1_000),
    "tiny": Tier(rate=1, burst=3),
}
ADMIN_DENIED = "Invalid or missing admin token."
SCOPE_DENIED = "Token scope not authorized for this endpoint"
CREATE_AGENT = "/agentq.v1.AgentService/CreateAgent"
EXECUTE = "/agentq.v1.AgentService/Execute"
CREATE_TOKEN = "/agentq.v1.TokenService/CreateToken"
SCOPED = sorted((m, a.scope) for m, a in policy.ACCESS.items() if a.scope is not None)


@pytest.fixture(scope="module")
def blocking() -> Iterator[Blocking]:
    pool = Blocking(4)
    yield pool
    pool.close()


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def access(store: FakeStore) -> AccessService:
    return _access(store.unit_of_work)


def _access(uow: Any) -> AccessService:
    return AccessService(
        uow,
        pepper=PEPPER,
        tiers=TIERS,
        default_tier="roomy",
        max_unfinished_jobs=None,
        clock=FakeClock(),
    )


@pytest.fixture
def guard(access: AccessService, blocking: Blocking) -> Guard:
    return _gate(access, blocking)


def _gate(
    access: AccessService,
    blocking: Blocking,
    *,
    limiter: RateLimiter | None = None,
    admin_token: str | None = ADMIN_TOKEN,
) -> Guard:
    return Guard(
        jwt=JwtSettings(SECRET, ISSUER, None),
        access=access,
        limiter=limiter or MemoryRateLimiter(),
        blocking=blocking,
        admin_token=admin_token,
    )


def _admit(guard: Guard, method: str, metadata: Mapping[str, Any] | None = None) -> Admission:
    """The admission of a call that passed; the guard's error otherwise."""
    admission = Admission()
    asyncio.run(guard.admit(method, metadata or {}, admission))
    return admission


def _refusal(guard: Guard, method: str, metadata: Mapping[str, Any] | None = None) -> AgentQError:
    with pytest.raises(AgentQError) as caught:
        _admit(guard, method, metadata)
    return caught.value


def _bearer(role: str = "user", tenant: str = "acme", **extra: Any) -> dict[str, str]:
    token = mint_token(
        secret=SECRET, subject="alice", role=role, issuer=ISSUER, tenant_id=tenant, **extra
    )
    return {"authorization": f"Bearer {token}"}


def _key(
    access: AccessService,
    *,
    scopes: tuple[str, ...] = SCOPES,
    role: str = "user",
    tenant: str = "acme",
) -> str:
    _, key = access.create_key(NewKey(tenant, "guard test", role, scopes, None))
    return key


class UnreachableLimiter:
    """A limiter whose store does not answer."""

    async def take(self, tenant_id: str, tier: Tier) -> Decision:
        raise Unavailable("Rate limiter unavailable")

    async def close(self) -> None:
        pass


class CountingLimiter(MemoryRateLimiter):
    """A MemoryRateLimiter that counts its takes."""

    def __init__(self) -> None:
        super().__init__()
        self.takes = 0

    async def take(self, tenant_id: str, tier: Tier) -> Decision:
        self.takes += 1
        return await super().take(tenant_id, tier)


# Public and admin methods.


@pytest.mark.parametrize("method", sorted(policy.PUBLIC))
def test_a_public_method_runs_without_credentials_and_without_a_rate_limit(
    access: AccessService, blocking: Blocking, method: str
) -> None:
    limiter = CountingLimiter()

    admission = _admit(_gate(access, blocking, limiter=limiter), method)

    assert admission.principal is None
    assert admission.trailers == []
    assert limiter.takes == 0


@pytest.mark.parametrize("method", sorted(policy.ADMIN))
def test_an_admin_method_runs_with_the_admin_token(guard: Guard, method: str) -> None:
    admission = _admit(guard, method, {"x-admin-api-key": ADMIN_TOKEN})

    assert admission.principal is None


@pytest.mark.parametrize("method", sorted(policy.ADMIN))
@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"x-admin-api-key": ""},
        {"x-admin-api-key": ADMIN_TOKEN[:-1]},
        {"x-admin-api-key": ADMIN_TOKEN + "x"},
        {"authorization": f"Bearer {ADMIN_TOKEN}"},
        _bearer(role="admin"),
    ],
    ids=["missing", "empty", "shorter", "longer", "as-bearer", "admin-jwt"],
)
def test_an_admin_method_without_the_admin_token_is_denied(
    guard: Guard, method: str, metadata: dict[str, str]
) -> None:
    error = _refusal(guard, method, metadata)

    assert isinstance(error, PermissionDenied)
    assert error.message == ADMIN_DENIED


@pytest.mark.parametrize("configured", [None, ""])
@pytest.mark.parametrize("sent", [None, "", "anything"])
def test_admin_methods_are_closed_when_no_admin_token_is_configured(
    access: AccessService, blocking: Blocking, configured: str | None, sent: str | None
) -> None:
    guard = _gate(access, blocking, admin_token=configured)
    metadata = {} if sent is None else {"x-admin-api-key": sent}

    error = _refusal(guard, "/agentq.v1.AdminService/CreateApiKey", metadata)

    assert isinstance(error, PermissionDenied)
    assert error.message == ADMIN_DENIED


# JWTs.


def test_a_jwt_of_an_allowed_role_passes_as_its_caller(guard: Guard) -> None:
    admission = _admit(guard, CREATE_AGENT, _bearer(role="user", tenant="globex"))

    assert admission.principal is not None
    assert (admission.principal.subject, admission.principal.tenant_id) == ("alice", "globex")
    assert admission.principal.scopes is None


def test_a_jwt_of_a_role_not_allowed_is_denied(guard: Guard) -> None:
    error = _refusal(guard, CREATE_AGENT, _bearer(role="agent"))

    assert isinstance(error, PermissionDenied)
    assert error.message == "Insufficient permissions"


@pytest.mark.parametrize("method", sorted(policy.ACCESS.keys() - policy.KEY_EXCHANGE))
def test_an_admin_role_jwt_passes_every_method_for_callers(guard: Guard, method: str) -> None:
    assert _admit(guard, method, _bearer(role="admin")).principal is not None


def test_a_method_for_callers_without_credentials_is_unauthenticated(guard: Guard) -> None:
    error = _refusal(guard, EXECUTE)

    assert isinstance(error, Unauthenticated)
    assert error.message == "Missing Authorization header"


def test_a_jwt_signed_with_another_secret_is_unauthenticated(guard: Guard) -> None:
    token = mint_token(secret="x" * 48, subject="alice", role="user", issuer=ISSUER)

    error = _refusal(guard, EXECUTE, {"authorization": f"Bearer {token}"})

    assert isinstance(error, Unauthenticated)
    assert error.message == "Token validation failed: InvalidSignature"


def test_a_jwt_made_from_a_key_keeps_the_keys_scopes(guard: Guard) -> None:
    scoped = _bearer(role="user", scopes=["jobs:read"])

    assert _admit(guard, "/agentq.v1.JobService/GetJob", scoped).principal is not None
    error = _refusal(guard, CREATE_AGENT, scoped)
    assert isinstance(error, PermissionDenied)
    assert error.message == SCOPE_DENIED


# API keys.


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
@pytest.mark.parametrize(("method", "scope"), SCOPED)
def test_an_api_key_passes_with_the_methods_scope(
    guard: Guard, access: AccessService, header: str, method: str, scope: str
) -> None:
    key = _key(access, scopes=(scope,), tenant="globex")
    sent = key if header == "x-api-key" else f"Bearer {key}"

    admission = _admit(guard, method, {header: sent})

    assert admission.principal is not None
    assert admission.principal.tenant_id == "globex"
    assert admission.principal.scopes == frozenset({scope})


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
@pytest.mark.parametrize(("method", "scope"), SCOPED)
def test_an_api_key_without_the_methods_scope_is_denied(
    guard: Guard, access: AccessService, header: str, method: str, scope: str
) -> None:
    key = _key(access, scopes=tuple(s for s in SCOPES if s != scope))
    sent = key if header == "x-api-key" else f"Bearer {key}"

    error = _refusal(guard, method, {header: sent})

    assert isinstance(error, PermissionDenied)
    assert error.message == SCOPE_DENIED


def test_an_api_key_of_a_role_not_allowed_is_denied_whatever_its_scopes(
    guard: Guard, access: AccessService
) -> None:
    key = _key(access, role="agent", scopes=SCOPES)

    error = _refusal(guard, CREATE_AGENT, {"x-api-key": key})

    assert isinstance(error, PermissionDenied)
    assert error.message == "Insufficient permissions"


@pytest.mark.parametrize(
    "metadata",
    [
        {"x-api-key": "agq_" + "A" * 43},
        {"x-api-key": "not-a-key"},
        {"authorization": "Bearer agq_" + "A" * 43},
    ],
    ids=["unknown", "no-prefix", "unknown-bearer"],
)
def test_a_key_that_is_not_a_live_key_is_an_invalid_api_key(
    guard: Guard, metadata: dict[str, str]
) -> None:
    error = _refusal(guard, EXECUTE, metadata)

    assert isinstance(error, Unauthenticated)
    assert error.message == "Invalid API key"


def test_a_revoked_key_is_refused_on_its_next_call(guard: Guard, access: AccessService) -> None:
    key = _key(access)
    _admit(guard, EXECUTE, {"x-api-key": key})
    (row,) = access.list_keys("acme")

    access.revoke_key(row.id)

    error = _refusal(guard, EXECUTE, {"x-api-key": key})
    assert isinstance(error, Unauthenticated)
    assert error.message == "Invalid API key"


# The token exchange.


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
def test_the_token_exchange_takes_a_key_of_any_scope(
    guard: Guard, access: AccessService, header: str
) -> None:
    key = _key(access, scopes=("agents:read",), role="agent")
    sent = key if header == "x-api-key" else f"bearer {key}"

    admission = _admit(guard, CREATE_TOKEN, {header: sent})

    assert admission.principal is not None
    assert admission.principal.role == "agent"
    assert admission.principal.scopes == frozenset({"agents:read"})


def test_the_token_exchange_refuses_a_jwt_as_an_invalid_api_key(guard: Guard) -> None:
    error = _refusal(guard, CREATE_TOKEN, _bearer(role="admin"))

    assert isinstance(error, Unauthenticated)
    assert error.message == "Invalid API key"


def test_the_token_exchange_without_credentials_asks_for_an_api_key(guard: Guard) -> None:
    error = _refusal(guard, CREATE_TOKEN)

    assert isinstance(error, Unauthenticated)
    assert error.message == "Missing API key"


# Rate limits.


def test_each_admitted_call_reports_its_rate_limit_in_the_trailers(
    guard: Guard, access: AccessService
) -> None:
    access.set_limits("acme", tier="tiny", max_unfinished=None)
    before = time.time()

    trailers = [dict(_admit(guard, EXECUTE, _bearer()).trailers) for _ in range(3)]

    assert [t["x-ratelimit-limit"] for t in trailers] == ["3", "3", "3"]
    assert [t["x-ratelimit-remaining"] for t in trailers] == ["2", "1", "0"]
    # Three taken at one a second: full again three seconds from now.
    reset = int(trailers[-1]["x-ratelimit-reset"])
    assert math.floor(before) + 3 <= reset <= math.ceil(time.time()) + 3


def test_a_call_past_the_burst_is_refused_with_when_to_retry_and_who_hit_the_limit(
    guard: Guard, access: AccessService
) -> None:
    access.set_limits("acme", tier="tiny", max_unfinished=None)
    for _ in range(3):
        _admit(guard, EXECUTE, _bearer())
    admission = Admission()

    with pytest.raises(ResourceExhausted) as caught:
        asyncio.run(guard.admit(EXECUTE, _bearer(), admission))

    error = caught.value
    assert error.message == "Too many requests"
    assert error.retry_after_s >= 1
    assert error.subject == "tenant:acme"
    assert error.limit == "3 requests at once, refilled at 1 per second"
    assert admission.principal is None
    assert dict(admission.trailers)["x-ratelimit-remaining"] == "0"


def test_api_keys_and_jwts_of_one_tenant_share_its_bucket_and_others_have_their_own(
    guard: Guard, access: AccessService
) -> None:
    access.set_limits("acme", tier="tiny", max_unfinished=None)
    key = _key(access)
    _admit(guard, EXECUTE, {"x-api-key": key})
    _admit(guard, EXECUTE, _bearer())
    _admit(guard, CREATE_TOKEN, {"x-api-key": key})

    assert isinstance(_refusal(guard, EXECUTE, _bearer()), ResourceExhausted)
    assert _admit(guard, EXECUTE, _bearer(tenant="globex")).principal is not None


def test_an_unreachable_rate_limiter_refuses_the_call_as_unavailable(
    access: AccessService, blocking: Blocking
) -> None:
    guard = _gate(access, blocking, limiter=UnreachableLimiter())
    admission = Admission()

    with pytest.raises(Unavailable) as caught:
        asyncio.run(guard.admit(EXECUTE, _bearer(), admission))

    assert caught.value.message == "Rate limiter unavailable"
    assert admission.principal is None


class _DatabaseDown:
    def __enter__(self) -> UnitOfWork:
        raise Unavailable("Database unavailable")

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("caller", ["api-key", "jwt"])
def test_an_unreachable_key_store_refuses_the_call_as_unavailable(
    access: AccessService, blocking: Blocking, caller: str
) -> None:
    metadata = {"x-api-key": _key(access)} if caller == "api-key" else _bearer()
    guard = _gate(_access(_DatabaseDown), blocking)
    admission = Admission()

    with pytest.raises(Unavailable) as caught:
        asyncio.run(guard.admit(EXECUTE, metadata, admission))

    assert caught.value.message == "Database unavailable"
    assert admission.principal is None


# The policy table.


def _service_files() -> list[FileDescriptor]:
    names = [m.name for m in pkgutil.iter_modules(agentq.v1.__path__)]
    modules = [
        importlib.import_module(f"agentq.v1.{n}") for n in names if n.endswith("_service_pb2")
    ]
    return [module.DESCRIPTOR for module in modules]


def test_every_rpc_of_agentq_v1_is_in_exactly_one_access_table() -> None:
    methods = policy.method_names(_service_files())
    tables = {"PUBLIC": policy.PUBLIC, "ADMIN": policy.ADMIN, "ACCESS": policy.ACCESS.keys()}

    services = {m.split("/")[1] for m in methods}
    assert services >= {
        f"agentq.v1.{s}Service" for s in ("Agent", "Job", "System", "Admin", "Token")
    }
    placed = {m: [name for name, table in tables.items() if m in table] for m in methods}
    assert {m: found for m, found in placed.items() if len(found) != 1} == {}
    policy.check_complete(_service_files())


def test_the_access_table_names_only_rpcs_that_exist_and_scopes_that_exist() -> None:
    methods = policy.method_names(_service_files())
    ours = {m for m in policy.PUBLIC | policy.ADMIN | policy.ACCESS.keys() if "/agentq." in m}

    assert ours - methods == set()
    assert {a.scope for a in policy.ACCESS.values()} <= {*SCOPES, None}
    assert policy.ACCESS.keys() >= policy.KEY_EXCHANGE


def test_an_rpc_missing_from_the_policy_stops_the_server_from_starting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(policy.ACCESS, "/agentq.v1.JobService/WatchJob")
    monkeypatch.setattr(policy, "ADMIN", policy.ADMIN - {"/agentq.v1.AdminService/RevokeApiKey"})

    with pytest.raises(RuntimeError) as caught:
        policy.check_complete(_service_files())

    assert str(caught.value) == (
        "RPCs missing from the access policy: /agentq.v1.AdminService/RevokeApiKey, "
        "/agentq.v1.JobService/WatchJob"
    )


def test_a_method_in_no_table_is_denied_rather_than_let_through(guard: Guard) -> None:
    error = _refusal(guard, "/agentq.v1.AgentService/Undeclared", _bearer(role="admin"))

    assert isinstance(error, PermissionDenied)
