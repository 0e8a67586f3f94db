"""Access control over real HTTP (issue 5): API keys, the admin API, scopes, the token
exchange, and what happens when the store that checks a key is down.

Every test starts a real gRPC server (ServerThread) with the REST shim in front of it, and
talks to it only through HTTP, as an integrator would. Where a second server is needed it
is a separate `agentq serve` process on the same PostgreSQL database.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url

from server.settings import Settings
from tests.e2e.harness import (
    SECRET,
    ServerThread,
    env_for,
    running_rest,
    running_server,
    serve_process,
    settings_for,
    token,
)

ADMIN_TOKEN = "e2e-admin-token-0123456789abcdefghijklmnop"
ALL_SCOPES = ["agents:read", "agents:write", "jobs:read", "jobs:write"]
ADMIN_DENIED = "Invalid or missing admin token."
INVALID_KEY = "Invalid API key"
MISSING_KEY = "Missing API key"
SCOPE_DENIED = "Token scope not authorized for this endpoint"
KEY_PATTERN = re.compile(r"agq_[A-Za-z0-9_-]{32,}")
API_KEY_FIELDS = {
    "id",
    "tenant_id",
    "name",
    "role",
    "scopes",
    "prefix",
    "created_at",
    "last_used_at",
    "expires_at",
    "revoked_at",
}
AGENT = {"name": "helper", "role": "You are a helpful assistant."}
START_TIMEOUT_S = 60
TIMEOUT_S = 15
# One valid body per admin route (the tenant and key id are made up: the admin
# check comes before anything is looked up).
ADMIN_ROUTES = [
    ("POST", "/admin/api-keys", {"tenant_id": "t", "name": "n", "scopes": ["jobs:read"]}),
    ("GET", "/admin/api-keys", None),
    ("DELETE", f"/admin/api-keys/{uuid.uuid4()}", None),
    ("PUT", "/admin/tenants/t/limits", {"max_unfinished_jobs": 3}),
    ("GET", "/admin/tenants/t/limits", None),
]


def _admin(value: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"X-Admin-API-Key": value}


def _bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def _key_header(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def _assert_error(response: httpx.Response, status: int, code: str, message: str) -> None:
    """The contract's error body, with exactly this status, code and message."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["error"] == {"code": code, "message": message, "status": status}, body
    if isinstance(body["detail"], str):
        assert body["detail"] == message, body


def _create_key(
    client: httpx.Client,
    tenant: str,
    scopes: list[str],
    *,
    role: str = "user",
    name: str = "integration",
    **extra: Any,
) -> dict[str, Any]:
    body = {"tenant_id": tenant, "name": name, "role": role, "scopes": scopes, **extra}
    created = client.post("/admin/api-keys", json=body, headers=_admin())
    assert created.status_code == 201, created.text
    result: dict[str, Any] = created.json()
    return result


def _parse_time(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


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


def _with_admin(settings: Settings, **updates: Any) -> Settings:
    return settings.model_copy(update={"admin_token": SecretStr(ADMIN_TOKEN), **updates})


# --- 1. keys: created, used, listed, revoked -------------------------------------------


def test_a_key_is_created_used_listed_and_revoked_and_another_server_process_refuses_it_at_once(
    scaled_settings: Settings, tmp_path: Path
) -> None:
    settings = _with_admin(scaled_settings)
    with (
        running_server(settings, in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
        serve_process(settings, tmp_path) as other,
        httpx.Client(base_url=rest.url, timeout=TIMEOUT_S) as here,
        httpx.Client(base_url=other.url, timeout=TIMEOUT_S) as there,
    ):
        before = datetime.now(UTC).replace(microsecond=0)
        created = _create_key(here, "acme", ALL_SCOPES, name="ci key", lifetime_seconds=3600)
        key = created["key"]
        # Shown once, in full: agq_ and at least 32 random characters.
        assert KEY_PATTERN.fullmatch(key), key
        assert set(created) == API_KEY_FIELDS | {"key"}
        assert created["tenant_id"] == "acme" and created["name"] == "ci key"
        assert created["role"] == "user" and sorted(created["scopes"]) == ALL_SCOPES
        assert key.startswith(created["prefix"]) and len(created["prefix"]) < 12
        assert created["last_used_at"] is None and created["revoked_at"] is None
        lifetime = _parse_time(created["expires_at"]) - _parse_time(created["created_at"])
        assert lifetime.total_seconds() == pytest.approx(3600, abs=1)
        assert _parse_time(created["created_at"]) >= before

        # Used as X-API-Key on this server, as Authorization: Bearer agq_... on the other.
        agent = here.post("/api/v1/agents", json=AGENT, headers=_key_header(key))
        assert agent.status_code == 201, agent.text
        agent_id = agent.json()["id"]
        read = there.get(f"/api/v1/agents/{agent_id}", headers=_bearer(key))
        assert read.status_code == 200, read.text
        # The key acts for its tenant: a JWT of that tenant sees the same agent.
        same_tenant = here.get(
            f"/api/v1/agents/{agent_id}", headers=_bearer(token("ops", tenant="acme"))
        )
        assert same_tenant.status_code == 200, same_tenant.text
        other_tenant = here.get(f"/api/v1/agents/{agent_id}", headers=_bearer(token("mallory")))
        assert other_tenant.status_code == 404, other_tenant.text

        # Listed (on the other server): metadata only, the key nowhere, last use recorded.
        listed = there.get("/admin/api-keys", params={"tenant_id": "acme"}, headers=_admin())
        assert listed.status_code == 200, listed.text
        [entry] = listed.json()["data"]
        assert set(entry) == API_KEY_FIELDS
        assert entry["id"] == created["id"] and entry["prefix"] == created["prefix"]
        assert entry["last_used_at"] is not None
        assert _parse_time(entry["last_used_at"]) >= before
        assert key not in listed.text and key[len(created["prefix"]) :] not in listed.text
        everyone = here.get("/admin/api-keys", headers=_admin())
        assert created["id"] in {k["id"] for k in everyone.json()["data"]}
        assert key not in everyone.text

        # Revoked here: refused at once there, in both forms, and here too.
        revoked = here.delete(f"/admin/api-keys/{created['id']}", headers=_admin())
        assert revoked.status_code == 204, revoked.text
        assert revoked.content == b""
        for client in (there, here):
            for headers in (_key_header(key), _bearer(key)):
                refused = client.get(f"/api/v1/agents/{agent_id}", headers=headers)
                _assert_error(refused, 401, "UNAUTHORIZED", INVALID_KEY)
        [entry] = there.get(
            "/admin/api-keys", params={"tenant_id": "acme"}, headers=_admin()
        ).json()["data"]
        assert entry["revoked_at"] is not None
        unknown = here.delete(f"/admin/api-keys/{uuid.uuid4()}", headers=_admin())
        _assert_error(unknown, 404, "NOT_FOUND", "API key not found")

        # What the database holds is no key: no column has it, or any 20 characters of it.
        with server.engine.connect() as connection:
            rows = connection.execute(text("SELECT * FROM api_keys")).mappings().all()
    assert len(rows) == 1
    [row] = rows
    windows = {key[i : i + 20] for i in range(len(key) - 19)}
    for column, value in row.items():
        stored = str(value)
        leaked = [w for w in windows if w in stored]
        assert not leaked, f"api_keys.{column} holds key material: {stored!r}"
    digest = str(row["digest"])
    assert re.fullmatch(r"[0-9a-f]{64}", digest), digest
    plain = {hashlib.sha256(k.encode()).hexdigest() for k in (key, key.removeprefix("agq_"))}
    assert digest not in plain, "the digest is a plain SHA-256 of the key: no pepper"


# --- 2. the admin API ---------------------------------------------------------------


def test_with_no_admin_token_configured_every_admin_route_is_refused_with_403(
    tmp_path: Path,
) -> None:
    with _embedded(tmp_path) as (_, client):
        for method, path, body in ADMIN_ROUTES:
            for headers in ({}, _admin(), _admin(""), _bearer(token("root", role="admin"))):
                response = client.request(method, path, json=body, headers=headers)
                _assert_error(response, 403, "FORBIDDEN", ADMIN_DENIED)


def test_a_wrong_or_missing_admin_token_is_refused_with_403_on_every_admin_route(
    admin_client: httpx.Client,
) -> None:
    wrong = [
        {},
        _admin(""),
        _admin("wrong"),
        _admin(ADMIN_TOKEN[:-1]),
        _admin(ADMIN_TOKEN + "x"),
        _admin(ADMIN_TOKEN.upper()),
        # Not the admin token's header: neither a bearer token nor an API key header.
        _bearer(ADMIN_TOKEN),
        _key_header(ADMIN_TOKEN),
        _bearer(token("root", role="admin")),
    ]
    for method, path, body in ADMIN_ROUTES:
        for headers in wrong:
            response = admin_client.request(method, path, json=body, headers=headers)
            _assert_error(response, 403, "FORBIDDEN", ADMIN_DENIED)
    # The right token opens every route (the made-up key id is simply not found).
    statuses = [
        admin_client.request(method, path, json=body, headers=_admin()).status_code
        for method, path, body in ADMIN_ROUTES
    ]
    assert statuses == [201, 200, 404, 200, 200]


def test_an_unknown_scope_is_a_422_naming_it_and_the_valid_ones(
    admin_client: httpx.Client,
) -> None:
    message = (
        "Invalid scope(s): ['foo']. Valid: ['agents:read', 'agents:write', 'jobs:read', "
        "'jobs:write']"
    )
    for scopes in (["foo"], ["jobs:read", "foo"]):
        body = {"tenant_id": "acme", "name": "bad", "scopes": scopes}
        response = admin_client.post("/admin/api-keys", json=body, headers=_admin())
        assert response.status_code == 422, response.text
        payload = response.json()
        assert payload["error"] == {"code": "VALIDATION_ERROR", "message": message, "status": 422}
        assert [e["msg"] for e in payload["detail"]] == [message], payload
        assert payload["detail"][0]["loc"][-1] == "scopes"
    listed = admin_client.get("/admin/api-keys", headers=_admin())
    assert listed.json()["data"] == [], "a key was stored despite the invalid scope"


BAD_TENANT = "Invalid tenant_id: must be 1 to 255 characters, without NUL"


def test_a_bad_tenant_id_is_a_422_located_where_it_was_sent(admin_client: httpx.Client) -> None:
    sent = [
        (admin_client.get("/admin/api-keys?tenant_id=", headers=_admin()), ["query", "tenant_id"]),
        (admin_client.get("/admin/tenants/%00x/limits", headers=_admin()), ["path", "tenant_id"]),
        (
            admin_client.put(
                "/admin/tenants/%00x/limits", json={"max_unfinished_jobs": 3}, headers=_admin()
            ),
            ["path", "tenant_id"],
        ),
        (
            admin_client.post(
                "/admin/api-keys",
                json={"tenant_id": "", "name": "n", "scopes": ["jobs:read"]},
                headers=_admin(),
            ),
            ["body", "tenant_id"],
        ),
    ]
    for response, loc in sent:
        _assert_error(response, 422, "VALIDATION_ERROR", BAD_TENANT)
        detail = response.json()["detail"]
        assert detail == [{"loc": loc, "msg": BAD_TENANT, "type": "value_error"}], detail


def test_two_api_keys_or_two_admin_tokens_are_refused_as_ambiguous(
    admin_client: httpx.Client,
) -> None:
    key = _create_key(admin_client, "twice", ALL_SCOPES)["key"]
    other = _create_key(admin_client, "other", ALL_SCOPES)["key"]
    for keys in ([key, key], [key, other], [other, "agq_" + "x" * 43]):
        headers = [("X-API-Key", sent) for sent in keys]
        for response in (
            admin_client.get("/api/v1/jobs", headers=headers),
            admin_client.post("/api/v1/agents", json=AGENT, headers=headers),
            admin_client.post("/api/v1/tokens", headers=headers),
        ):
            _assert_error(response, 401, "UNAUTHORIZED", INVALID_KEY)
    bearers = [("Authorization", f"Bearer {key}"), ("Authorization", f"Bearer {key}")]
    for response in (
        admin_client.get("/api/v1/jobs", headers=bearers),
        admin_client.post("/api/v1/tokens", headers=bearers),
    ):
        _assert_error(response, 401, "UNAUTHORIZED", "Invalid Authorization header format")
    assert admin_client.get("/api/v1/agents", headers=_key_header(other)).json()["data"] == []
    admins = [("X-Admin-API-Key", ADMIN_TOKEN), ("X-Admin-API-Key", ADMIN_TOKEN)]
    _assert_error(
        admin_client.get("/admin/api-keys", headers=admins), 403, "FORBIDDEN", ADMIN_DENIED
    )


# --- 3. scopes ----------------------------------------------------------------------


def test_a_key_without_agents_write_is_refused_creating_an_agent_but_reads_jobs(
    admin_client: httpx.Client,
) -> None:
    reader = _create_key(admin_client, "reader", ["agents:read", "jobs:read"])["key"]
    owner = _bearer(token("boss", tenant="reader"))
    agent = admin_client.post("/api/v1/agents", json=AGENT, headers=owner)
    assert agent.status_code == 201, agent.text
    agent_id = agent.json()["id"]
    job = admin_client.post(
        f"/api/v1/agents/{agent_id}/execute", json={"prompt": "Hi"}, headers=owner
    )
    assert job.status_code == 202, job.text
    job_id = job.json()["job_id"]

    for headers in (_key_header(reader), _bearer(reader)):
        refused = admin_client.post("/api/v1/agents", json=AGENT, headers=headers)
        _assert_error(refused, 403, "FORBIDDEN", SCOPE_DENIED)
        queued = admin_client.post(
            f"/api/v1/agents/{agent_id}/execute", json={"prompt": "Hi"}, headers=headers
        )
        _assert_error(queued, 403, "FORBIDDEN", SCOPE_DENIED)
        listed = admin_client.get("/api/v1/jobs", headers=headers)
        assert listed.status_code == 200, listed.text
        assert job_id in {j["job_id"] for j in listed.json()["data"]}
        read = admin_client.get(f"/api/v1/jobs/{job_id}", headers=headers)
        assert read.status_code == 200, read.text
        assert admin_client.get(f"/api/v1/agents/{agent_id}", headers=headers).status_code == 200

    # A key with jobs:write but not jobs:read may queue, not read.
    writer = _create_key(admin_client, "reader", ["jobs:write"])["key"]
    queued = admin_client.post(
        f"/api/v1/agents/{agent_id}/execute", json={"prompt": "Hi"}, headers=_key_header(writer)
    )
    assert queued.status_code == 202, queued.text
    for path in (f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/stream", "/api/v1/jobs"):
        refused = admin_client.get(path, headers=_key_header(writer))
        _assert_error(refused, 403, "FORBIDDEN", SCOPE_DENIED)
    # A key's role is checked as a JWT's is: an `agent` may not create agents, whatever
    # its scopes.
    agent_role = _create_key(admin_client, "reader", ALL_SCOPES, role="agent")["key"]
    refused = admin_client.post("/api/v1/agents", json=AGENT, headers=_key_header(agent_role))
    _assert_error(refused, 403, "FORBIDDEN", "Insufficient permissions")


def _cli_token(*args: str) -> str:
    """A JWT minted by `agentq token`, as an operator would."""
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "token", *args],
        env={**env_for(settings_for()), "VEX_JWT_SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_jwt_minted_by_agentq_token_still_works_by_its_role(
    admin_client: httpx.Client,
) -> None:
    user = _bearer(_cli_token("--sub", "operator", "--role", "user"))
    agent = admin_client.post("/api/v1/agents", json=AGENT, headers=user)
    assert agent.status_code == 201, agent.text
    agent_id = agent.json()["id"]
    queued = admin_client.post(
        f"/api/v1/agents/{agent_id}/execute", json={"prompt": "Hi"}, headers=user
    )
    assert queued.status_code == 202, queued.text
    # No scopes in an operator's JWT: its role alone decides.
    caller = _bearer(_cli_token("--sub", "runner", "--role", "agent", "--tenant", "operator"))
    refused = admin_client.post("/api/v1/agents", json=AGENT, headers=caller)
    _assert_error(refused, 403, "FORBIDDEN", "Insufficient permissions")
    assert admin_client.get(f"/api/v1/agents/{agent_id}", headers=caller).status_code == 200
    job_id = queued.json()["job_id"]
    assert admin_client.get(f"/api/v1/jobs/{job_id}", headers=caller).status_code == 200


# --- 4. the token endpoint -------------------------------------------------------------


def test_an_api_key_is_exchanged_for_a_jwt_that_keeps_its_tenant_role_and_scopes(
    admin_client: httpx.Client,
) -> None:
    key = _create_key(admin_client, "tok", ["agents:read", "jobs:read"])["key"]
    owner = _bearer(token("boss", tenant="tok"))
    agent_id = admin_client.post("/api/v1/agents", json=AGENT, headers=owner).json()["id"]

    for headers in (_key_header(key), _bearer(key)):
        before = int(time.time())
        response = admin_client.post("/api/v1/tokens", headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "expires_at"}
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 900  # token_ttl_s, the default
        expires_at = _parse_time(body["expires_at"]).timestamp()
        assert before + 900 - 2 <= expires_at <= time.time() + 900 + 2
        claims = jwt.decode(body["access_token"], SECRET, algorithms=["HS256"], issuer="vex-api")
        assert claims["tenant_id"] == "tok" and claims["role"] == "user"
        assert claims["exp"] == int(expires_at)
        assert key not in body["access_token"]

        minted = _bearer(body["access_token"])
        read = admin_client.get(f"/api/v1/agents/{agent_id}", headers=minted)
        assert read.status_code == 200, read.text
        assert admin_client.get("/api/v1/jobs", headers=minted).status_code == 200
        # The key's scopes travel in the JWT: it may not do what the key may not.
        refused = admin_client.post("/api/v1/agents", json=AGENT, headers=minted)
        _assert_error(refused, 403, "FORBIDDEN", SCOPE_DENIED)
        # A JWT is not an API key: it cannot be exchanged again.
        again = admin_client.post("/api/v1/tokens", headers=minted)
        _assert_error(again, 401, "UNAUTHORIZED", INVALID_KEY)


def test_the_token_endpoint_refuses_a_jwt_a_bad_key_and_nothing_with_401(
    admin_client: httpx.Client,
) -> None:
    created = _create_key(admin_client, "tok", ["jobs:read"])
    admin_client.delete(f"/admin/api-keys/{created['id']}", headers=_admin())
    invalid = [
        _bearer(token("alice")),
        _bearer(token("root", role="admin")),
        _key_header("agq_" + "x" * 43),
        _bearer("agq_" + "x" * 43),
        _key_header("not-a-key"),
        _key_header(token("alice")),
        _key_header(created["key"]),  # revoked
        _bearer(created["key"]),
        {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
    ]
    for headers in invalid:
        response = admin_client.post("/api/v1/tokens", headers=headers)
        _assert_error(response, 401, "UNAUTHORIZED", INVALID_KEY)
    nothing = admin_client.post("/api/v1/tokens")
    _assert_error(nothing, 401, "UNAUTHORIZED", MISSING_KEY)
    # An expired key too, once its lifetime has passed.
    expiring = _create_key(admin_client, "tok", ["jobs:read"], lifetime_seconds=1)["key"]
    assert admin_client.post("/api/v1/tokens", headers=_key_header(expiring)).status_code == 200
    time.sleep(1.2)
    expired = admin_client.post("/api/v1/tokens", headers=_key_header(expiring))
    _assert_error(expired, 401, "UNAUTHORIZED", INVALID_KEY)
    refused = admin_client.get("/api/v1/jobs", headers=_key_header(expiring))
    _assert_error(refused, 401, "UNAUTHORIZED", INVALID_KEY)


# --- 7. the auth store fails --------------------------------------------------------


def _count(server: ServerThread, table: str) -> int:
    with server.engine.connect() as connection:
        return int(connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


def _assert_unavailable(response: httpx.Response, message: str) -> None:
    _assert_error(response, 503, "SERVICE_UNAVAILABLE", message)
    retry_after = response.headers.get("Retry-After", "")
    assert retry_after.isdigit() and int(retry_after) >= 1, response.headers


def test_with_redis_unreachable_every_checked_request_is_503_never_401_and_nothing_is_stored(
    scaled_settings: Settings,
) -> None:
    # Nothing listens on port 1: the rate limiter cannot read any bucket.
    settings = _with_admin(scaled_settings, redis_url="redis://127.0.0.1:1/0")
    with (
        running_server(settings, in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
        httpx.Client(base_url=rest.url, timeout=TIMEOUT_S) as client,
    ):
        key = _create_key(client, "acme", ALL_SCOPES)["key"]  # the admin API needs no bucket
        credentials = [_bearer(token("alice")), _key_header(key), _bearer(key)]
        for headers in credentials:
            for response in (
                client.post("/api/v1/agents", json=AGENT, headers=headers),
                client.get("/api/v1/agents", headers=headers),
            ):
                _assert_unavailable(response, "Rate limiter unavailable")
        tokens = client.post("/api/v1/tokens", headers=_key_header(key))
        _assert_unavailable(tokens, "Rate limiter unavailable")
        assert _count(server, "agents") == 0
        assert _count(server, "jobs") == 0


def _admin_conninfo(database_url: str) -> tuple[str, str]:
    url = make_url(database_url)
    admin = url.set(drivername="postgresql", database="postgres")
    return admin.render_as_string(hide_password=False), str(url.database)


def test_with_the_database_down_a_valid_api_key_gets_503_not_401(
    scaled_settings: Settings,
) -> None:
    conninfo, name = _admin_conninfo(scaled_settings.database_url)
    settings = _with_admin(scaled_settings)
    with (
        running_server(settings, in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
        httpx.Client(base_url=rest.url, timeout=TIMEOUT_S) as client,
    ):
        key = _create_key(client, "acme", ALL_SCOPES)["key"]
        agent = client.post("/api/v1/agents", json=AGENT, headers=_key_header(key))
        assert agent.status_code == 201, agent.text
        path = f"/api/v1/agents/{agent.json()['id']}"
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            try:
                responses = [
                    client.get(path, headers=_key_header(key)),
                    client.get(path, headers=_bearer(key)),
                    client.post("/api/v1/tokens", headers=_key_header(key)),
                    client.post("/api/v1/agents", json=AGENT, headers=_key_header(key)),
                ]
            finally:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        for response in responses:
            _assert_unavailable(response, "Database unavailable")
        # Once the database is back, so is the key.
        assert client.get(path, headers=_key_header(key)).status_code == 200
        assert _count(server, "agents") == 1
