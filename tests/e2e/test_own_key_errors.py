"""Every rule of self-service API keys, over REST and over gRPC alike: exact status, code
and message, and nothing stored by a refused request (README, Self-service API keys).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy import text

from tests.e2e import own_keys_helpers
from tests.e2e.access_helpers import create_key
from tests.e2e.harness import ServerThread, token
from tests.e2e.own_keys_helpers import (
    TIERS,
    Grpc,
    Outcome,
    Rest,
    Transport,
    in_seconds,
    unknown_id,
)

VALID_SCOPES = "['agents:read', 'agents:write', 'jobs:read', 'jobs:write', 'keys:write']"
VALID_TIERS = str(sorted(TIERS))
BAD_NAME = "Invalid name: must be 1 to 100 characters after trimming, without NUL"
NOT_HELD = "Cannot grant scope(s) the caller does not hold"
SCOPE_DENIED = "Token scope not authorized for this endpoint"


# pytest finds the fixtures among this module's attributes.
served, server, http = own_keys_helpers.served, own_keys_helpers.server, own_keys_helpers.http


@pytest.fixture(scope="module", params=["rest", "grpc"])
def transport(
    request: pytest.FixtureRequest, server: ServerThread, http: httpx.Client
) -> Iterator[Transport]:
    if request.param == "rest":
        yield Rest(http)
        return
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield Grpc(channel)


def _key(http: httpx.Client, scopes: list[str], *, tenant: str = "acme", role: str = "user") -> str:
    key: str = create_key(http, tenant, scopes, role=role)["key"]
    return key


def _stored_keys(server: ServerThread) -> int:
    with server.engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM api_keys")).scalar_one())


def _refused(outcome: Outcome, status: int, code: str, message: str) -> None:
    assert (outcome.status, outcome.code, outcome.message) == (status, code, message), outcome


# --- the check -------------------------------------------------------------------


def test_a_key_with_agents_read_cannot_create_a_key_with_jobs_write(
    server: ServerThread, http: httpx.Client, transport: Transport
) -> None:
    reader = _key(http, ["agents:read"])
    manager = _key(http, ["agents:read", "keys:write"])
    before = _stored_keys(server)

    # Without keys:write it may not manage keys at all; with it, it may grant only its own.
    _refused(transport.create(reader, {"scopes": ["jobs:write"]}), 403, "FORBIDDEN", SCOPE_DENIED)
    wider = transport.create(manager, {"scopes": ["agents:read", "jobs:write"]})
    _refused(wider, 403, "FORBIDDEN", f"{NOT_HELD}: ['jobs:write']")
    assert _stored_keys(server) == before
    # What it holds it may grant.
    assert transport.create(manager, {"scopes": ["agents:read"]}).status == 201


# --- the field rules of a new key ----------------------------------------------------------

FIELD_RULES = [
    pytest.param(
        {"scopes": ["foo"]}, f"Invalid scope(s): ['foo']. Valid: {VALID_SCOPES}", id="scope"
    ),
    pytest.param({"scopes": []}, f"Invalid scope(s): []. Valid: {VALID_SCOPES}", id="no-scope"),
    pytest.param({"scopes": ["jobs:read"], "name": "x" * 101}, BAD_NAME, id="long-name"),
    pytest.param({"scopes": ["jobs:read"], "name": "   "}, BAD_NAME, id="blank-name"),
    pytest.param(
        {"scopes": ["jobs:read"], "expires_at": in_seconds(-60)},
        "Invalid expires_at: must be in the future",
        id="past-expiry",
    ),
    pytest.param(
        {"scopes": ["jobs:read"], "expires_at": in_seconds(11 * 365 * 86400)},
        "Invalid expires_at: must be at most 315360000 seconds ahead",
        id="far-expiry",
    ),
    pytest.param(
        {"scopes": ["jobs:read"], "tier": "gold"},
        f"Invalid tier: 'gold'. Valid: {VALID_TIERS}",
        id="tier",
    ),
]


@pytest.mark.parametrize(("body", "message"), FIELD_RULES)
def test_a_field_that_breaks_its_rule_is_a_422_and_stores_nothing(
    server: ServerThread,
    http: httpx.Client,
    transport: Transport,
    body: dict[str, Any],
    message: str,
) -> None:
    manager = _key(http, ["jobs:read", "keys:write"])
    before = _stored_keys(server)

    _refused(transport.create(manager, body), 422, "VALIDATION_ERROR", message)
    assert _stored_keys(server) == before


def test_the_field_rules_come_before_the_callers_scopes(
    http: httpx.Client, transport: Transport
) -> None:
    manager = _key(http, ["jobs:read", "keys:write"])

    outcome = transport.create(manager, {"scopes": ["jobs:write"], "name": ""})

    _refused(outcome, 422, "VALIDATION_ERROR", BAD_NAME)


# --- who may manage keys ---------------------------------------------------------------------


def test_a_caller_without_keys_write_or_of_the_agent_role_may_not_manage_keys(
    http: httpx.Client, transport: Transport
) -> None:
    without = _key(http, ["agents:read", "agents:write", "jobs:read", "jobs:write"])
    agent = _key(http, ["jobs:read", "keys:write"], role="agent")

    for caller, message in ((without, SCOPE_DENIED), (agent, "Insufficient permissions")):
        _refused(transport.create(caller, {"scopes": ["jobs:read"]}), 403, "FORBIDDEN", message)
        _refused(transport.list(caller), 403, "FORBIDDEN", message)
        _refused(transport.delete(caller, unknown_id()), 403, "FORBIDDEN", message)
    _refused(
        transport.list(token("bot", role="agent")), 403, "FORBIDDEN", "Insufficient permissions"
    )


def test_without_credentials_every_call_is_a_401(transport: Transport) -> None:
    for outcome in (
        transport.create("Bearer-less", {"scopes": ["jobs:read"]}),
        transport.list("agq_not-a-key"),
        transport.delete("agq_not-a-key", unknown_id()),
    ):
        assert (outcome.status, outcome.code) == (401, "UNAUTHORIZED"), outcome


# --- keys that are not the caller's ----------------------------------------------------------


def test_an_unknown_key_and_another_tenants_key_are_both_not_found(
    http: httpx.Client, transport: Transport
) -> None:
    manager = _key(http, ["keys:write"])
    theirs = create_key(http, "globex", ["jobs:read"])

    for key_id in (unknown_id(), theirs["id"]):
        _refused(transport.delete(manager, key_id), 404, "NOT_FOUND", "API key not found")
    # Theirs still works.
    listed = http.get("/api/v1/jobs", headers={"X-API-Key": theirs["key"]})
    assert listed.status_code == 200, listed.text


def test_a_page_size_out_of_range_and_a_forged_page_token_are_422(
    http: httpx.Client, transport: Transport
) -> None:
    manager = _key(http, ["keys:write"])

    for query, message in (
        ({"page_size": 0}, "Invalid page_size: must be between 1 and 100"),
        ({"page_size": 101}, "Invalid page_size: must be between 1 and 100"),
        ({"page_token": "forged"}, "Invalid page_token"),
    ):
        _refused(transport.list(manager, **query), 422, "VALIDATION_ERROR", message)


def test_a_key_id_that_is_not_a_uuid_is_refused_as_the_other_ids_are(
    http: httpx.Client, server: ServerThread
) -> None:
    manager = _key(http, ["keys:write"])

    response = http.delete("/api/v1/api-keys/not-a-uuid", headers={"X-API-Key": manager})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        refused = Grpc(channel).delete(manager, "not-a-uuid")
    _refused(refused, 422, "VALIDATION_ERROR", "Invalid key_id: must be a UUID")


def test_rest_refuses_an_expiry_that_is_not_an_rfc_3339_string(http: httpx.Client) -> None:
    manager = _key(http, ["keys:write"])

    for expires_at, message in (
        (1_900_000_000, "Input should be a valid string"),
        ("tomorrow", "Input should be a valid datetime or date, input is too short"),
        ("2030-01-01T00:00:00", "Input should have timezone info"),
    ):
        body = {"scopes": ["keys:write"], "expires_at": expires_at}
        response = http.post("/api/v1/api-keys", json=body, headers={"X-API-Key": manager})
        assert response.status_code == 422, response.text
        assert response.json()["error"] == {
            "code": "VALIDATION_ERROR",
            "message": message,
            "status": 422,
        }


# --- a key's expiry ---------------------------------------------------------------------------

OUTLIVES = "Cannot grant a key that expires after the caller's own key"


def test_an_expiring_key_cannot_make_a_key_that_outlives_it(
    server: ServerThread, http: httpx.Client, transport: Transport
) -> None:
    # A leaked key that expires in an hour must not buy a key that never does
    # (README, Self-service API keys).
    manager = create_key(http, "acme", ["jobs:read", "keys:write"], lifetime_seconds=3600)["key"]
    before = _stored_keys(server)

    exchanged = http.post("/api/v1/tokens", headers={"X-API-Key": manager})
    assert exchanged.status_code == 200, exchanged.text
    for caller in (manager, exchanged.json()["access_token"]):
        for body in (
            {"scopes": ["jobs:read"]},
            {"scopes": ["jobs:read"], "expires_at": in_seconds(7200)},
        ):
            _refused(transport.create(caller, body), 403, "FORBIDDEN", OUTLIVES)
    assert _stored_keys(server) == before
    shorter = transport.create(manager, {"scopes": ["jobs:read"], "expires_at": in_seconds(1800)})
    assert shorter.status == 201, shorter
    # A key that never expires, and the operator's JWT, may grant any expiry.
    forever = _key(http, ["jobs:read", "keys:write"])
    assert transport.create(forever, {"scopes": ["jobs:read"]}).status == 201
    assert transport.create(token("ops"), {"scopes": ["jobs:read"]}).status == 201


@pytest.mark.parametrize(
    ("when", "message"),
    [
        (
            "9999-12-31T23:59:59-23:59",
            "Invalid expires_at: must be at most 315360000 seconds ahead",
        ),
        ("0001-01-01T00:00:00+01:00", "Invalid expires_at: must be in the future"),
    ],
)
def test_a_time_past_the_ends_of_the_calendar_in_utc_is_the_rule_not_a_500(
    server: ServerThread, http: httpx.Client, when: str, message: str
) -> None:
    # RFC 3339 allows an offset that carries these past year 9999 or before year 1 in UTC,
    # where no timestamp reaches; they are as far ahead (or behind) as any time can be.
    manager = _key(http, ["jobs:read", "keys:write"])
    before = _stored_keys(server)

    outcome = Rest(http).create(manager, {"scopes": ["jobs:read"], "expires_at": when})

    _refused(outcome, 422, "VALIDATION_ERROR", message)
    assert _stored_keys(server) == before
