"""The admin API, scopes and the token exchange over real HTTP (issue 5).

Every test starts a real gRPC server (ServerThread) with the REST shim in front of it, and
talks to it only through HTTP, as an integrator would.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.e2e.access_helpers import (
    ADMIN_DENIED,
    ADMIN_TOKEN,
    AGENT,
    ALL_SCOPES,
    INVALID_KEY,
    MISSING_KEY,
    SCOPE_DENIED,
    TIMEOUT_S,
    admin_header,
    assert_error,
    bearer,
    create_key,
    key_header,
    parse_time,
)
from tests.e2e.harness import (
    SECRET,
    ServerThread,
    env_for,
    running_rest,
    running_server,
    settings_for,
    token,
)
from tests.processes import run_agentq

# One valid body per admin route (the tenant and key id are made up: the admin
# check comes before anything is looked up).
ADMIN_ROUTES = [
    ("POST", "/admin/api-keys", {"tenant_id": "t", "name": "n", "scopes": ["jobs:read"]}),
    ("GET", "/admin/api-keys", None),
    ("DELETE", f"/admin/api-keys/{uuid.uuid4()}", None),
    ("PUT", "/admin/tenants/t/limits", {"max_unfinished_jobs": 3}),
    ("GET", "/admin/tenants/t/limits", None),
]


@contextmanager
def _embedded(tmp_path: Path, **overrides: Any) -> Iterator[tuple[ServerThread, httpx.Client]]:
    """The embedded default (SQLite, in-process workers) and a client of its REST shim."""
    settings = settings_for(database_url=f"sqlite:///{tmp_path / 'agentq.db'}", **overrides)
    with (
        running_server(settings, in_process_workers=True) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
        httpx.Client(base_url=rest.url, timeout=TIMEOUT_S) as client,
    ):
        yield server, client


@pytest.fixture
def admin_client(tmp_path: Path) -> Iterator[httpx.Client]:
    """A client of the embedded default with an admin token configured."""
    with _embedded(tmp_path, admin_token=ADMIN_TOKEN) as (_, client):
        yield client


# --- 2. the admin API ---------------------------------------------------------------


def test_with_no_admin_token_configured_every_admin_route_is_refused_with_403(
    tmp_path: Path,
) -> None:
    with _embedded(tmp_path) as (_, client):
        for method, path, body in ADMIN_ROUTES:
            for headers in (
                {},
                admin_header(),
                admin_header(""),
                bearer(token("root", role="admin")),
            ):
                response = client.request(method, path, json=body, headers=headers)
                assert_error(response, 403, "FORBIDDEN", ADMIN_DENIED)


def test_a_wrong_or_missing_admin_token_is_refused_with_403_on_every_admin_route(
    admin_client: httpx.Client,
) -> None:
    wrong = [
        {},
        admin_header(""),
        admin_header("wrong"),
        admin_header(ADMIN_TOKEN[:-1]),
        admin_header(ADMIN_TOKEN + "x"),
        admin_header(ADMIN_TOKEN.upper()),
        # Not the admin token's header: neither a bearer token nor an API key header.
        bearer(ADMIN_TOKEN),
        key_header(ADMIN_TOKEN),
        bearer(token("root", role="admin")),
    ]
    for method, path, body in ADMIN_ROUTES:
        for headers in wrong:
            response = admin_client.request(method, path, json=body, headers=headers)
            assert_error(response, 403, "FORBIDDEN", ADMIN_DENIED)
    # The right token opens every route (the made-up key id is simply not found).
    statuses = [
        admin_client.request(method, path, json=body, headers=admin_header()).status_code
        for method, path, body in ADMIN_ROUTES
    ]
    assert statuses == [201, 200, 404, 200, 200]


def test_an_unknown_scope_is_a_422_naming_it_and_the_valid_ones(
    admin_client: httpx.Client,
) -> None:
    message = (
        "Invalid scope(s): ['foo']. Valid: ['agents:read', 'agents:write', 'jobs:read', "
        "'jobs:write', 'keys:write']"
    )
    for scopes in (["foo"], ["jobs:read", "foo"]):
        body = {"tenant_id": "acme", "name": "bad", "scopes": scopes}
        response = admin_client.post("/admin/api-keys", json=body, headers=admin_header())
        assert response.status_code == 422, response.text
        payload = response.json()
        assert payload["error"] == {"code": "VALIDATION_ERROR", "message": message, "status": 422}
        assert [e["msg"] for e in payload["detail"]] == [message], payload
        assert payload["detail"][0]["loc"][-1] == "scopes"
    listed = admin_client.get("/admin/api-keys", headers=admin_header())
    assert listed.json()["data"] == [], "a key was stored despite the invalid scope"


BAD_TENANT = "Invalid tenant_id: must be 1 to 255 characters, without NUL"


def test_a_bad_tenant_id_is_a_422_located_where_it_was_sent(admin_client: httpx.Client) -> None:
    sent = [
        (
            admin_client.get("/admin/api-keys?tenant_id=", headers=admin_header()),
            ["query", "tenant_id"],
        ),
        (
            admin_client.get("/admin/tenants/%00x/limits", headers=admin_header()),
            ["path", "tenant_id"],
        ),
        (
            admin_client.put(
                "/admin/tenants/%00x/limits",
                json={"max_unfinished_jobs": 3},
                headers=admin_header(),
            ),
            ["path", "tenant_id"],
        ),
        (
            admin_client.post(
                "/admin/api-keys",
                json={"tenant_id": "", "name": "n", "scopes": ["jobs:read"]},
                headers=admin_header(),
            ),
            ["body", "tenant_id"],
        ),
    ]
    for response, loc in sent:
        assert_error(response, 422, "VALIDATION_ERROR", BAD_TENANT)
        detail = response.json()["detail"]
        assert detail == [{"loc": loc, "msg": BAD_TENANT, "type": "value_error"}], detail


def test_two_api_keys_or_two_admin_tokens_are_refused_as_ambiguous(
    admin_client: httpx.Client,
) -> None:
    key = create_key(admin_client, "twice", ALL_SCOPES)["key"]
    other = create_key(admin_client, "other", ALL_SCOPES)["key"]
    for keys in ([key, key], [key, other], [other, "agq_" + "x" * 43]):
        headers = [("X-API-Key", sent) for sent in keys]
        for response in (
            admin_client.get("/api/v1/jobs", headers=headers),
            admin_client.post("/api/v1/agents", json=AGENT, headers=headers),
            admin_client.post("/api/v1/tokens", headers=headers),
        ):
            assert_error(response, 401, "UNAUTHORIZED", INVALID_KEY)
    bearers = [("Authorization", f"Bearer {key}"), ("Authorization", f"Bearer {key}")]
    for response in (
        admin_client.get("/api/v1/jobs", headers=bearers),
        admin_client.post("/api/v1/tokens", headers=bearers),
    ):
        assert_error(response, 401, "UNAUTHORIZED", "Invalid Authorization header format")
    assert admin_client.get("/api/v1/agents", headers=key_header(other)).json()["data"] == []
    admins = [("X-Admin-API-Key", ADMIN_TOKEN), ("X-Admin-API-Key", ADMIN_TOKEN)]
    assert_error(
        admin_client.get("/admin/api-keys", headers=admins), 403, "FORBIDDEN", ADMIN_DENIED
    )


# --- 3. scopes ----------------------------------------------------------------------


def _agent_with_a_job(client: httpx.Client, headers: dict[str, str]) -> tuple[str, str]:
    """An agent created and a job queued on it, both with these headers: their ids."""
    agent = client.post("/api/v1/agents", json=AGENT, headers=headers)
    assert agent.status_code == 201, agent.text
    agent_id: str = agent.json()["id"]
    job = client.post(f"/api/v1/agents/{agent_id}/execute", json={"prompt": "Hi"}, headers=headers)
    assert job.status_code == 202, job.text
    job_id: str = job.json()["job_id"]
    return agent_id, job_id


def test_a_key_without_agents_write_is_refused_creating_an_agent_but_reads_jobs(
    admin_client: httpx.Client,
) -> None:
    reader = create_key(admin_client, "reader", ["agents:read", "jobs:read"])["key"]
    owner = bearer(token("boss", tenant="reader"))
    agent_id, job_id = _agent_with_a_job(admin_client, owner)

    for headers in (key_header(reader), bearer(reader)):
        refused = admin_client.post("/api/v1/agents", json=AGENT, headers=headers)
        assert_error(refused, 403, "FORBIDDEN", SCOPE_DENIED)
        queued = admin_client.post(
            f"/api/v1/agents/{agent_id}/execute", json={"prompt": "Hi"}, headers=headers
        )
        assert_error(queued, 403, "FORBIDDEN", SCOPE_DENIED)
        listed = admin_client.get("/api/v1/jobs", headers=headers)
        assert listed.status_code == 200, listed.text
        assert job_id in {j["job_id"] for j in listed.json()["data"]}
        read = admin_client.get(f"/api/v1/jobs/{job_id}", headers=headers)
        assert read.status_code == 200, read.text
        assert admin_client.get(f"/api/v1/agents/{agent_id}", headers=headers).status_code == 200

    # A key with jobs:write but not jobs:read may queue, not read.
    writer = create_key(admin_client, "reader", ["jobs:write"])["key"]
    queued = admin_client.post(
        f"/api/v1/agents/{agent_id}/execute", json={"prompt": "Hi"}, headers=key_header(writer)
    )
    assert queued.status_code == 202, queued.text
    for path in (f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/stream", "/api/v1/jobs"):
        refused = admin_client.get(path, headers=key_header(writer))
        assert_error(refused, 403, "FORBIDDEN", SCOPE_DENIED)
    # A key's role is checked as a JWT's is: an `agent` may not create agents, whatever
    # its scopes.
    agent_role = create_key(admin_client, "reader", ALL_SCOPES, role="agent")["key"]
    refused = admin_client.post("/api/v1/agents", json=AGENT, headers=key_header(agent_role))
    assert_error(refused, 403, "FORBIDDEN", "Insufficient permissions")


def _cli_token(*args: str) -> str:
    """A JWT minted by `agentq token`, as an operator would."""
    done = run_agentq("token", *args, env={**env_for(settings_for()), "VEX_JWT_SECRET": SECRET})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_jwt_minted_by_agentq_token_still_works_by_its_role(
    admin_client: httpx.Client,
) -> None:
    user = bearer(_cli_token("--sub", "operator", "--role", "user"))
    agent_id, job_id = _agent_with_a_job(admin_client, user)
    # No scopes in an operator's JWT: its role alone decides.
    caller = bearer(_cli_token("--sub", "runner", "--role", "agent", "--tenant", "operator"))
    refused = admin_client.post("/api/v1/agents", json=AGENT, headers=caller)
    assert_error(refused, 403, "FORBIDDEN", "Insufficient permissions")
    assert admin_client.get(f"/api/v1/agents/{agent_id}", headers=caller).status_code == 200
    assert admin_client.get(f"/api/v1/jobs/{job_id}", headers=caller).status_code == 200


# --- 4. the token endpoint -------------------------------------------------------------


def test_an_api_key_is_exchanged_for_a_jwt_that_keeps_its_tenant_role_and_scopes(
    admin_client: httpx.Client,
) -> None:
    key = create_key(admin_client, "tok", ["agents:read", "jobs:read"])["key"]
    owner = bearer(token("boss", tenant="tok"))
    agent_id = admin_client.post("/api/v1/agents", json=AGENT, headers=owner).json()["id"]

    for headers in (key_header(key), bearer(key)):
        before = int(time.time())
        response = admin_client.post("/api/v1/tokens", headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "expires_at"}
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 900  # token_ttl_s, the default
        expires_at = parse_time(body["expires_at"]).timestamp()
        assert before + 900 - 2 <= expires_at <= time.time() + 900 + 2
        claims = jwt.decode(body["access_token"], SECRET, algorithms=["HS256"], issuer="vex-api")
        assert claims["tenant_id"] == "tok" and claims["role"] == "user"
        assert claims["exp"] == int(expires_at)
        assert key not in body["access_token"]

        minted = bearer(body["access_token"])
        read = admin_client.get(f"/api/v1/agents/{agent_id}", headers=minted)
        assert read.status_code == 200, read.text
        assert admin_client.get("/api/v1/jobs", headers=minted).status_code == 200
        # The key's scopes travel in the JWT: it may not do what the key may not.
        refused = admin_client.post("/api/v1/agents", json=AGENT, headers=minted)
        assert_error(refused, 403, "FORBIDDEN", SCOPE_DENIED)
        # A JWT is not an API key: it cannot be exchanged again.
        again = admin_client.post("/api/v1/tokens", headers=minted)
        assert_error(again, 401, "UNAUTHORIZED", INVALID_KEY)


def test_the_token_endpoint_refuses_a_jwt_a_bad_key_and_nothing_with_401(
    admin_client: httpx.Client,
) -> None:
    created = create_key(admin_client, "tok", ["jobs:read"])
    admin_client.delete(f"/admin/api-keys/{created['id']}", headers=admin_header())
    invalid = [
        bearer(token("alice")),
        bearer(token("root", role="admin")),
        key_header("agq_" + "x" * 43),
        bearer("agq_" + "x" * 43),
        key_header("not-a-key"),
        key_header(token("alice")),
        key_header(created["key"]),  # revoked
        bearer(created["key"]),
        {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
    ]
    for headers in invalid:
        response = admin_client.post("/api/v1/tokens", headers=headers)
        assert_error(response, 401, "UNAUTHORIZED", INVALID_KEY)
    nothing = admin_client.post("/api/v1/tokens")
    assert_error(nothing, 401, "UNAUTHORIZED", MISSING_KEY)
    # An expired key too, once its lifetime has passed.
    expiring = create_key(admin_client, "tok", ["jobs:read"], lifetime_seconds=1)["key"]
    assert admin_client.post("/api/v1/tokens", headers=key_header(expiring)).status_code == 200
    time.sleep(1.2)
    expired = admin_client.post("/api/v1/tokens", headers=key_header(expiring))
    assert_error(expired, 401, "UNAUTHORIZED", INVALID_KEY)
    refused = admin_client.get("/api/v1/jobs", headers=key_header(expiring))
    assert_error(refused, 401, "UNAUTHORIZED", INVALID_KEY)
