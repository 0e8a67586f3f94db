"""A JWT exchanged for an API key never outlives the key: it expires with it, and dies with
its revocation on every replica within a second. Real HTTP against real servers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
from pydantic import SecretStr

from server.settings import Settings
from tests.e2e.harness import running_rest, running_server, serve_process, settings_for

ADMIN_TOKEN = "e2e-admin-token-0123456789abcdefghijklmnop"
INVALID_KEY = {"code": "UNAUTHORIZED", "message": "Invalid API key", "status": 401}
AGENTS = "/api/v1/agents"
TIMEOUT_S = 15


@contextmanager
def _replica(settings: Settings) -> Iterator[httpx.Client]:
    """A gRPC server with the REST shim in front, and a client of the shim."""
    with (
        running_server(settings, in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
        httpx.Client(base_url=rest.url, timeout=TIMEOUT_S) as client,
    ):
        yield client


def _key(client: httpx.Client, **extra: Any) -> dict[str, Any]:
    body = {"tenant_id": "acme", "name": "exchange", "role": "user", "scopes": ["agents:read"]}
    created = client.post(
        "/admin/api-keys", json={**body, **extra}, headers={"X-Admin-API-Key": ADMIN_TOKEN}
    )
    assert created.status_code == 201, created.text
    result: dict[str, Any] = created.json()
    return result


def _exchange(client: httpx.Client, key: str) -> dict[str, Any]:
    issued = client.post("/api/v1/tokens", headers={"X-API-Key": key})
    assert issued.status_code == 200, issued.text
    result: dict[str, Any] = issued.json()
    return result


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _refused(response: httpx.Response) -> bool:
    if response.status_code == 200:
        return False
    assert response.status_code == 401, response.text
    assert response.json()["error"] == INVALID_KEY, response.text
    return True


def test_a_token_expires_no_later_than_its_key_and_is_refused_once_the_key_has_expired(
    tmp_path: Path,
) -> None:
    settings = settings_for(
        database_url=f"sqlite:///{tmp_path / 'agentq.db'}", admin_token=ADMIN_TOKEN
    )
    with _replica(settings) as client:
        created = _key(client, lifetime_seconds=3)
        issued = _exchange(client, created["key"])
        key_expires = datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
        claims = jwt.decode(issued["access_token"], options={"verify_signature": False})
        assert claims["exp"] <= key_expires.timestamp()
        assert claims["agentq_key_id"] == created["id"]
        assert issued["expires_in"] <= 3
        assert client.get(AGENTS, headers=_bearer(issued["access_token"])).status_code == 200

        # Past the key's expiry (and the half second the replicas' view may lag), both
        # the key and the token are refused, though JWT checks allow a minute of skew.
        time.sleep(max(0.0, key_expires.timestamp() - time.time()) + 1.0)
        assert _refused(client.get(AGENTS, headers={"X-API-Key": created["key"]}))
        assert _refused(client.get(AGENTS, headers=_bearer(issued["access_token"])))


def test_a_revoked_keys_token_is_refused_at_once_here_and_within_a_second_on_another_replica(
    scaled_settings: Settings, tmp_path: Path
) -> None:
    settings = scaled_settings.model_copy(update={"admin_token": SecretStr(ADMIN_TOKEN)})
    with (
        _replica(settings) as here,
        serve_process(settings, tmp_path) as other,
        httpx.Client(base_url=other.url, timeout=TIMEOUT_S) as there,
    ):
        created = _key(here)
        token = _exchange(here, created["key"])["access_token"]
        assert here.get(AGENTS, headers=_bearer(token)).status_code == 200
        assert there.get(AGENTS, headers=_bearer(token)).status_code == 200

        revoked = here.delete(
            f"/admin/api-keys/{created['id']}", headers={"X-Admin-API-Key": ADMIN_TOKEN}
        )
        assert revoked.status_code == 204, revoked.text
        revoked_at = time.monotonic()
        assert _refused(here.get(AGENTS, headers=_bearer(token)))
        while not _refused(there.get(AGENTS, headers=_bearer(token))):
            assert time.monotonic() - revoked_at < 1.0, "the other replica still accepts it"
            time.sleep(0.02)
        assert time.monotonic() - revoked_at < 1.0
