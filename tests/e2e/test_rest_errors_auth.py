"""Errors of docs/contract.md §1-§3 over HTTP, of credentials and access: 401, 403 and 404."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.e2e.harness import ServerThread, claims, signed, token
from tests.e2e.rest_errors_helpers import (
    SOME_ID,
    VALID_AGENT,
    assert_error,
    nothing_stored,
    stored_rows,
)

# --- 401 ---------------------------------------------------------------------------------

BAD_CREDENTIALS = [
    pytest.param(None, "Missing Authorization header", id="no-header"),
    pytest.param("Basic x", "Invalid Authorization header format", id="basic"),
    pytest.param("Bearer", "Invalid Authorization header format", id="bearer-alone"),
    pytest.param("Bearer not-a-jwt", "Invalid token", id="not-a-jwt"),
    pytest.param(
        "Bearer " + signed(claims(exp=int(time.time()) - 3600)), "Token expired", id="expired"
    ),
    pytest.param(
        "Bearer " + signed(claims(), secret="another-secret-" + "x" * 32),
        "Token validation failed: InvalidSignature",
        id="wrong-secret",
    ),
    pytest.param(
        "Bearer " + signed(claims(iss="someone-else")),
        "Token validation failed: InvalidIssuer",
        id="wrong-issuer",
    ),
    pytest.param(
        "Bearer " + signed(claims(aud="elsewhere")),
        "Token validation failed: InvalidAudience",
        id="audience",
    ),
    pytest.param(
        "Bearer " + signed(claims(), alg="HS512"),
        "Token validation failed: InvalidAlgorithm",
        id="hs512",
    ),
    pytest.param(
        "Bearer " + signed(claims(role=None)),
        "Token validation failed: MissingClaim(role)",
        id="no-role",
    ),
    pytest.param(
        "Bearer " + signed(claims(sub=None)),
        "Token validation failed: MissingClaim(sub)",
        id="no-sub",
    ),
    pytest.param(
        "Bearer " + signed(claims(tenant_id="t" * 256)),
        "Token validation failed: MissingClaim(tenant_id)",
        id="tenant-over-255",
    ),
    pytest.param(
        "Bearer " + signed(claims(sub="s" * 256)),
        "Token validation failed: MissingClaim(tenant_id)",
        id="sub-as-tenant-over-255",
    ),
]


def _auth_headers(header: str | None) -> dict[str, str]:
    return {} if header is None else {"Authorization": header}


@pytest.mark.parametrize(("header", "message"), BAD_CREDENTIALS)
def test_bad_credentials_on_reading_a_job_are_401_with_the_contract_message(
    anonymous: httpx.Client, header: str | None, message: str
) -> None:
    response = anonymous.get(f"/api/v1/jobs/{SOME_ID}", headers=_auth_headers(header))
    assert_error(response, 401, "UNAUTHORIZED", message)


@pytest.mark.parametrize(("header", "message"), BAD_CREDENTIALS)
def test_bad_credentials_on_creating_an_agent_are_401_and_store_nothing(
    anonymous: httpx.Client, server: ServerThread, header: str | None, message: str
) -> None:
    with nothing_stored(server):
        response = anonymous.post("/api/v1/agents", json=VALID_AGENT, headers=_auth_headers(header))
        assert_error(response, 401, "UNAUTHORIZED", message)


TWO_AUTHORIZATIONS = [
    pytest.param([token("alice"), token("bob")], id="two-tenants"),
    pytest.param([token("alice"), token("alice")], id="the-same-token-twice"),
    pytest.param([token("alice"), "not-a-jwt"], id="a-good-and-a-bad-one"),
]


@pytest.mark.parametrize("tokens", TWO_AUTHORIZATIONS)
def test_two_authorization_headers_are_refused_with_401_on_either_lane(
    anonymous: httpx.Client, server: ServerThread, agent_id: str, tokens: list[str]
) -> None:
    headers = [("Authorization", f"Bearer {sent}") for sent in tokens]
    with nothing_stored(server):
        for response in (
            anonymous.get(f"/api/v1/agents/{agent_id}", headers=headers),  # the fast lane
            anonymous.get("/api/v1/agents", headers=headers),
            anonymous.post("/api/v1/agents", json=VALID_AGENT, headers=headers),
            anonymous.post(
                f"/api/v1/agents/{agent_id}/execute", json={"prompt": "hi"}, headers=headers
            ),
        ):
            assert_error(response, 401, "UNAUTHORIZED", "Invalid Authorization header format")


# --- 403 ---------------------------------------------------------------------------------


def test_the_agent_role_may_not_create_agents(
    anonymous: httpx.Client, server: ServerThread
) -> None:
    with nothing_stored(server):
        headers = {"Authorization": f"Bearer {token('alice', role='agent')}"}
        response = anonymous.post("/api/v1/agents", json=VALID_AGENT, headers=headers)
        assert_error(response, 403, "FORBIDDEN", "Insufficient permissions")


def test_an_unknown_role_may_not_read_jobs(anonymous: httpx.Client) -> None:
    headers = {"Authorization": f"Bearer {token('alice', role='viewer')}"}
    response = anonymous.get(f"/api/v1/jobs/{SOME_ID}", headers=headers)
    assert_error(response, 403, "FORBIDDEN", "Insufficient permissions")


# --- 404 ---------------------------------------------------------------------------------


def test_an_unknown_agent_is_not_found(http: httpx.Client, server: ServerThread) -> None:
    with nothing_stored(server):
        assert_error(http.get(f"/api/v1/agents/{SOME_ID}"), 404, "NOT_FOUND", "Agent not found")
        executed = http.post(f"/api/v1/agents/{SOME_ID}/execute", json={"prompt": "hi"})
        assert_error(executed, 404, "NOT_FOUND", "Agent not found")


def test_an_unknown_job_is_not_found_by_its_id(http: httpx.Client) -> None:
    response = http.get(f"/api/v1/jobs/{SOME_ID}")
    assert_error(response, 404, "NOT_FOUND", f"Job {SOME_ID} not found")


def test_another_tenants_agent_and_job_answer_exactly_like_unknown_ids(
    http: httpx.Client, anonymous: httpx.Client, server: ServerThread, agent_id: str
) -> None:
    before = stored_rows(server)
    acked = http.post(f"/api/v1/agents/{agent_id}/execute", json={"prompt": "hi"})
    assert acked.status_code == 202, acked.text
    job_id = acked.json()["job_id"]
    unknown_job = str(uuid.uuid4())
    bob = {"Authorization": f"Bearer {token('bob')}"}

    for theirs, unknown in [
        (
            anonymous.get(f"/api/v1/agents/{agent_id}", headers=bob),
            anonymous.get(f"/api/v1/agents/{SOME_ID}", headers=bob),
        ),
        (
            anonymous.post(
                f"/api/v1/agents/{agent_id}/execute", json={"prompt": "hi"}, headers=bob
            ),
            anonymous.post(f"/api/v1/agents/{SOME_ID}/execute", json={"prompt": "hi"}, headers=bob),
        ),
    ]:
        assert_error(theirs, 404, "NOT_FOUND", "Agent not found")
        assert theirs.json() == unknown.json()

    theirs_job = anonymous.get(f"/api/v1/jobs/{job_id}", headers=bob)
    unknown_job_response = anonymous.get(f"/api/v1/jobs/{unknown_job}", headers=bob)
    assert_error(theirs_job, 404, "NOT_FOUND", f"Job {job_id} not found")
    assert_error(unknown_job_response, 404, "NOT_FOUND", f"Job {unknown_job} not found")
    # Only alice's own job was stored; bob's attempts stored nothing.
    assert stored_rows(server) == (before[0], before[1] + 1)


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v2/agents", "/"])
def test_an_unknown_route_is_not_found(anonymous: httpx.Client, path: str) -> None:
    assert_error(anonymous.get(path), 404, "NOT_FOUND")
