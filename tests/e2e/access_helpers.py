"""What the tests of access control over real HTTP share: credentials, errors, API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from pydantic import SecretStr

from server.settings import Settings

ADMIN_TOKEN = "e2e-admin-token-0123456789abcdefghijklmnop"
ALL_SCOPES = ["agents:read", "agents:write", "jobs:read", "jobs:write"]
ADMIN_DENIED = "Invalid or missing admin token."
INVALID_KEY = "Invalid API key"
MISSING_KEY = "Missing API key"
SCOPE_DENIED = "Token scope not authorized for this endpoint"
AGENT = {"name": "helper", "role": "You are a helpful assistant."}
TIMEOUT_S = 15


def admin_header(value: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"X-Admin-API-Key": value}


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def key_header(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def assert_error(response: httpx.Response, status: int, code: str, message: str) -> None:
    """The contract's error body, with exactly this status, code and message."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["error"] == {"code": code, "message": message, "status": status}, body
    if isinstance(body["detail"], str):
        assert body["detail"] == message, body


def create_key(
    client: httpx.Client,
    tenant: str,
    scopes: list[str],
    *,
    role: str = "user",
    name: str = "integration",
    **extra: Any,
) -> dict[str, Any]:
    body = {"tenant_id": tenant, "name": name, "role": role, "scopes": scopes, **extra}
    created = client.post("/admin/api-keys", json=body, headers=admin_header())
    assert created.status_code == 201, created.text
    result: dict[str, Any] = created.json()
    return result


def parse_time(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def with_admin(settings: Settings, **updates: Any) -> Settings:
    return settings.model_copy(update={"admin_token": SecretStr(ADMIN_TOKEN), **updates})
