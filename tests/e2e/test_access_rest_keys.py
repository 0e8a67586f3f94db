"""API keys over real HTTP (issue 5): created, used, listed and revoked across two server
processes, and what happens when the store that checks a key is down.

Every test starts a real gRPC server (ServerThread) with the REST shim in front of it, and
talks to it only through HTTP, as an integrator would. Where a second server is needed it
is a separate `agentq serve` process on the same PostgreSQL database.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from server.settings import Settings
from tests.e2e.access_helpers import (
    AGENT,
    ALL_SCOPES,
    INVALID_KEY,
    TIMEOUT_S,
    admin_header,
    assert_error,
    bearer,
    create_key,
    key_header,
    parse_time,
    with_admin,
)
from tests.e2e.database_outage import database_down
from tests.e2e.harness import ServerThread, running_rest, running_server, serve_process, token
from tests.e2e.rest_fields import API_KEY_FIELDS

KEY_PATTERN = re.compile(r"agq_[A-Za-z0-9_-]{32,}")


# --- 1. keys: created, used, listed, revoked -------------------------------------------


def test_a_key_is_created_used_listed_and_revoked_and_another_server_process_refuses_it_at_once(
    scaled_settings: Settings, tmp_path: Path
) -> None:
    settings = with_admin(scaled_settings)
    with (
        running_server(settings, in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
        serve_process(settings, tmp_path) as other,
        httpx.Client(base_url=rest.url, timeout=TIMEOUT_S) as here,
        httpx.Client(base_url=other.url, timeout=TIMEOUT_S) as there,
    ):
        before = datetime.now(UTC).replace(microsecond=0)
        created = create_key(here, "acme", ALL_SCOPES, name="ci key", lifetime_seconds=3600)
        key = created["key"]
        # Shown once, in full: agq_ and at least 32 random characters.
        assert KEY_PATTERN.fullmatch(key), key
        assert set(created) == API_KEY_FIELDS | {"key"}
        assert created["tenant_id"] == "acme" and created["name"] == "ci key"
        assert created["role"] == "user" and sorted(created["scopes"]) == ALL_SCOPES
        assert key.startswith(created["prefix"]) and len(created["prefix"]) < 12
        assert created["last_used_at"] is None and created["revoked_at"] is None
        lifetime = parse_time(created["expires_at"]) - parse_time(created["created_at"])
        assert lifetime.total_seconds() == pytest.approx(3600, abs=1)
        assert parse_time(created["created_at"]) >= before

        # Used as X-API-Key on this server, as Authorization: Bearer agq_... on the other.
        agent = here.post("/api/v1/agents", json=AGENT, headers=key_header(key))
        assert agent.status_code == 201, agent.text
        agent_id = agent.json()["id"]
        read = there.get(f"/api/v1/agents/{agent_id}", headers=bearer(key))
        assert read.status_code == 200, read.text
        # The key acts for its tenant: a JWT of that tenant sees the same agent.
        same_tenant = here.get(
            f"/api/v1/agents/{agent_id}", headers=bearer(token("ops", tenant="acme"))
        )
        assert same_tenant.status_code == 200, same_tenant.text
        other_tenant = here.get(f"/api/v1/agents/{agent_id}", headers=bearer(token("mallory")))
        assert other_tenant.status_code == 404, other_tenant.text

        # Listed (on the other server): metadata only, the key nowhere, last use recorded.
        listed = there.get("/admin/api-keys", params={"tenant_id": "acme"}, headers=admin_header())
        assert listed.status_code == 200, listed.text
        [entry] = listed.json()["data"]
        assert set(entry) == API_KEY_FIELDS
        assert entry["id"] == created["id"] and entry["prefix"] == created["prefix"]
        assert entry["last_used_at"] is not None
        assert parse_time(entry["last_used_at"]) >= before
        assert key not in listed.text and key[len(created["prefix"]) :] not in listed.text
        everyone = here.get("/admin/api-keys", headers=admin_header())
        assert created["id"] in {k["id"] for k in everyone.json()["data"]}
        assert key not in everyone.text

        # Revoked here: refused at once there, in both forms, and here too.
        revoked = here.delete(f"/admin/api-keys/{created['id']}", headers=admin_header())
        assert revoked.status_code == 204, revoked.text
        assert revoked.content == b""
        for client in (there, here):
            for headers in (key_header(key), bearer(key)):
                refused = client.get(f"/api/v1/agents/{agent_id}", headers=headers)
                assert_error(refused, 401, "UNAUTHORIZED", INVALID_KEY)
        [entry] = there.get(
            "/admin/api-keys", params={"tenant_id": "acme"}, headers=admin_header()
        ).json()["data"]
        assert entry["revoked_at"] is not None
        unknown = here.delete(f"/admin/api-keys/{uuid.uuid4()}", headers=admin_header())
        assert_error(unknown, 404, "NOT_FOUND", "API key not found")

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


# --- 7. the auth store fails --------------------------------------------------------


def _count(server: ServerThread, table: str) -> int:
    with server.engine.connect() as connection:
        return int(connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


def _assert_unavailable(response: httpx.Response, message: str) -> None:
    assert_error(response, 503, "SERVICE_UNAVAILABLE", message)
    retry_after = response.headers.get("Retry-After", "")
    assert retry_after.isdigit() and int(retry_after) >= 1, response.headers


def test_with_redis_unreachable_every_checked_request_is_503_never_401_and_nothing_is_stored(
    scaled_settings: Settings,
) -> None:
    # Nothing listens on port 1: the rate limiter cannot read any bucket.
    settings = with_admin(scaled_settings, redis_url="redis://127.0.0.1:1/0")
    with (
        running_server(settings, in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
        httpx.Client(base_url=rest.url, timeout=TIMEOUT_S) as client,
    ):
        key = create_key(client, "acme", ALL_SCOPES)["key"]  # the admin API needs no bucket
        credentials = [bearer(token("alice")), key_header(key), bearer(key)]
        for headers in credentials:
            for response in (
                client.post("/api/v1/agents", json=AGENT, headers=headers),
                client.get("/api/v1/agents", headers=headers),
            ):
                _assert_unavailable(response, "Rate limiter unavailable")
        tokens = client.post("/api/v1/tokens", headers=key_header(key))
        _assert_unavailable(tokens, "Rate limiter unavailable")
        assert _count(server, "agents") == 0
        assert _count(server, "jobs") == 0


def test_with_the_database_down_a_valid_api_key_gets_503_not_401(
    scaled_settings: Settings,
) -> None:
    settings = with_admin(scaled_settings)
    with (
        running_server(settings, in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
        httpx.Client(base_url=rest.url, timeout=TIMEOUT_S) as client,
    ):
        key = create_key(client, "acme", ALL_SCOPES)["key"]
        agent = client.post("/api/v1/agents", json=AGENT, headers=key_header(key))
        assert agent.status_code == 201, agent.text
        path = f"/api/v1/agents/{agent.json()['id']}"
        with database_down(scaled_settings.database_url):
            responses = [
                client.get(path, headers=key_header(key)),
                client.get(path, headers=bearer(key)),
                client.post("/api/v1/tokens", headers=key_header(key)),
                client.post("/api/v1/agents", json=AGENT, headers=key_header(key)),
            ]
        for response in responses:
            _assert_unavailable(response, "Database unavailable")
        # Once the database is back, so is the key.
        assert client.get(path, headers=key_header(key)).status_code == 200
        assert _count(server, "agents") == 1
