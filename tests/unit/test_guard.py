"""The guard lets a call run only with the right credentials, role and scope.

The guard runs on the real AccessService over a world's store (in-memory SQLite) and a
MemoryRateLimiter: the `access` and `guard` fixtures of conftest.py. Its rate limits are in
test_guard_limits.py. Public and admin methods are decided without the database: their
tests run on one that cannot be opened (`offline`).
"""

from __future__ import annotations

import pytest

from server.api import policy
from server.api.guard import Guard
from server.auth.tokens import mint_token
from server.errors import PermissionDenied, Unauthenticated
from server.service.access import SCOPES, AccessService, NewKey
from tests.unit.guard_calls import (
    ADMIN_TOKEN,
    CREATE_AGENT,
    CREATE_TOKEN,
    EXECUTE,
    ISSUER,
    SECRET,
    CountingLimiter,
    admit,
    bearer,
    make_guard,
    new_key,
    refusal,
)

ADMIN_DENIED = "Invalid or missing admin token."
SCOPE_DENIED = "Token scope not authorized for this endpoint"
SCOPED = sorted((m, a.scope) for m, a in policy.ACCESS.items() if a.scope is not None)


# Public and admin methods.


@pytest.mark.parametrize("method", sorted(policy.PUBLIC))
async def test_a_public_method_runs_without_credentials_and_without_a_rate_limit(
    offline: AccessService, method: str
) -> None:
    limiter = CountingLimiter()

    admission = await admit(make_guard(offline, limiter=limiter), method)

    assert admission.principal is None
    assert admission.trailers == []
    assert limiter.takes == 0


@pytest.mark.parametrize("method", sorted(policy.ADMIN))
async def test_an_admin_method_runs_with_the_admin_token(
    offline: AccessService, method: str
) -> None:
    admission = await admit(make_guard(offline), method, {"x-admin-api-key": ADMIN_TOKEN})

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
        bearer(role="admin"),
    ],
    ids=["missing", "empty", "shorter", "longer", "as-bearer", "admin-jwt"],
)
async def test_an_admin_method_without_the_admin_token_is_denied(
    offline: AccessService, method: str, metadata: dict[str, str]
) -> None:
    error = await refusal(make_guard(offline), method, metadata)

    assert isinstance(error, PermissionDenied)
    assert error.message == ADMIN_DENIED


@pytest.mark.parametrize("configured", [None, ""])
@pytest.mark.parametrize("sent", [None, "", "anything"])
async def test_admin_methods_are_closed_when_no_admin_token_is_configured(
    offline: AccessService, configured: str | None, sent: str | None
) -> None:
    guard = make_guard(offline, admin_token=configured)
    metadata = {} if sent is None else {"x-admin-api-key": sent}

    error = await refusal(guard, "/agentq.v1.AdminService/CreateApiKey", metadata)

    assert isinstance(error, PermissionDenied)
    assert error.message == ADMIN_DENIED


# JWTs.


async def test_a_jwt_of_an_allowed_role_passes_as_its_caller(guard: Guard) -> None:
    admission = await admit(guard, CREATE_AGENT, bearer(role="user", tenant="globex"))

    assert admission.principal is not None
    assert (admission.principal.subject, admission.principal.tenant_id) == ("alice", "globex")
    assert admission.principal.scopes is None


async def test_a_jwt_of_a_role_not_allowed_is_denied(guard: Guard) -> None:
    error = await refusal(guard, CREATE_AGENT, bearer(role="agent"))

    assert isinstance(error, PermissionDenied)
    assert error.message == "Insufficient permissions"


@pytest.mark.parametrize("method", sorted(policy.ACCESS.keys() - policy.KEY_EXCHANGE))
async def test_an_admin_role_jwt_passes_every_method_for_callers(guard: Guard, method: str) -> None:
    assert (await admit(guard, method, bearer(role="admin"))).principal is not None


async def test_a_method_for_callers_without_credentials_is_unauthenticated(guard: Guard) -> None:
    error = await refusal(guard, EXECUTE)

    assert isinstance(error, Unauthenticated)
    assert error.message == "Missing Authorization header"


async def test_a_jwt_signed_with_another_secret_is_unauthenticated(guard: Guard) -> None:
    token = mint_token(secret="x" * 48, subject="alice", role="user", issuer=ISSUER)

    error = await refusal(guard, EXECUTE, {"authorization": f"Bearer {token}"})

    assert isinstance(error, Unauthenticated)
    assert error.message == "Token validation failed: InvalidSignature"


async def test_a_jwt_made_from_a_key_keeps_the_keys_scopes(guard: Guard) -> None:
    scoped = bearer(role="user", scopes=["jobs:read"])

    assert (await admit(guard, "/agentq.v1.JobService/GetJob", scoped)).principal is not None
    error = await refusal(guard, CREATE_AGENT, scoped)
    assert isinstance(error, PermissionDenied)
    assert error.message == SCOPE_DENIED


# API keys.


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
@pytest.mark.parametrize(("method", "scope"), SCOPED)
async def test_an_api_key_passes_with_the_methods_scope(
    guard: Guard, access: AccessService, header: str, method: str, scope: str
) -> None:
    key = await new_key(access, scopes=(scope,), tenant="globex")
    sent = key if header == "x-api-key" else f"Bearer {key}"

    admission = await admit(guard, method, {header: sent})

    assert admission.principal is not None
    assert admission.principal.tenant_id == "globex"
    assert admission.principal.scopes == frozenset({scope})


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
@pytest.mark.parametrize(("method", "scope"), SCOPED)
async def test_an_api_key_without_the_methods_scope_is_denied(
    guard: Guard, access: AccessService, header: str, method: str, scope: str
) -> None:
    key = await new_key(access, scopes=tuple(s for s in SCOPES if s != scope))
    sent = key if header == "x-api-key" else f"Bearer {key}"

    error = await refusal(guard, method, {header: sent})

    assert isinstance(error, PermissionDenied)
    assert error.message == SCOPE_DENIED


async def test_an_api_key_of_a_role_not_allowed_is_denied_whatever_its_scopes(
    guard: Guard, access: AccessService
) -> None:
    key = await new_key(access, role="agent", scopes=SCOPES)

    error = await refusal(guard, CREATE_AGENT, {"x-api-key": key})

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
async def test_a_key_that_is_not_a_live_key_is_an_invalid_api_key(
    guard: Guard, metadata: dict[str, str]
) -> None:
    error = await refusal(guard, EXECUTE, metadata)

    assert isinstance(error, Unauthenticated)
    assert error.message == "Invalid API key"


async def test_a_revoked_key_is_refused_on_its_next_call(
    guard: Guard, access: AccessService
) -> None:
    key = await new_key(access)
    await admit(guard, EXECUTE, {"x-api-key": key})
    (row,) = await access.list_keys("acme")

    await access.revoke_key(row.id)

    error = await refusal(guard, EXECUTE, {"x-api-key": key})
    assert isinstance(error, Unauthenticated)
    assert error.message == "Invalid API key"


async def test_a_token_exchanged_for_a_key_is_refused_once_the_key_is_revoked(
    guard: Guard, access: AccessService
) -> None:
    row, _ = await access.create_key(NewKey("acme", "guard test", "user", SCOPES, None))
    token = mint_token(
        secret=SECRET,
        subject=f"apikey:{row.id}",
        role="user",
        issuer=ISSUER,
        tenant_id="acme",
        scopes=SCOPES,
        api_key_id=row.id,
    )
    exchanged = {"authorization": f"Bearer {token}"}
    assert (await admit(guard, EXECUTE, exchanged)).principal is not None

    await access.revoke_key(row.id)

    error = await refusal(guard, EXECUTE, exchanged)
    assert isinstance(error, Unauthenticated)
    assert error.message == "Invalid API key"


# The token exchange.


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
async def test_the_token_exchange_takes_a_key_of_any_scope(
    guard: Guard, access: AccessService, header: str
) -> None:
    key = await new_key(access, scopes=("agents:read",), role="agent")
    sent = key if header == "x-api-key" else f"bearer {key}"

    admission = await admit(guard, CREATE_TOKEN, {header: sent})

    assert admission.principal is not None
    assert admission.principal.role == "agent"
    assert admission.principal.scopes == frozenset({"agents:read"})


async def test_the_token_exchange_refuses_a_jwt_as_an_invalid_api_key(guard: Guard) -> None:
    error = await refusal(guard, CREATE_TOKEN, bearer(role="admin"))

    assert isinstance(error, Unauthenticated)
    assert error.message == "Invalid API key"


async def test_the_token_exchange_without_credentials_asks_for_an_api_key(guard: Guard) -> None:
    error = await refusal(guard, CREATE_TOKEN)

    assert isinstance(error, Unauthenticated)
    assert error.message == "Missing API key"
