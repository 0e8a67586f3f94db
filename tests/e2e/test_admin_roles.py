"""A key's role over REST: one of the three, or left out for `user`; never empty."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import running_rest, running_server, settings_for

ADMIN_TOKEN = "e2e-admin-token-0123456789abcdefghijklmnop"
INVALID_ROLE = "Invalid role: must be one of admin, user, agent"


@pytest.mark.parametrize("role", ["", "bogus", "User"])
def test_a_role_outside_the_three_is_422_and_stores_no_key(tmp_path: Path, role: str) -> None:
    settings = settings_for(
        database_url=f"sqlite:///{tmp_path / 'agentq.db'}", admin_token=ADMIN_TOKEN
    )
    admin = {"X-Admin-API-Key": ADMIN_TOKEN}
    body = {"tenant_id": "acme", "name": "ci", "role": role, "scopes": ["jobs:read"]}
    with (
        running_server(settings, in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
        httpx.Client(base_url=rest.url, timeout=15) as client,
    ):
        refused = client.post("/admin/api-keys", json=body, headers=admin)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"] == {
            "code": "VALIDATION_ERROR",
            "message": INVALID_ROLE,
            "status": 422,
        }
        assert refused.json()["detail"][0]["loc"] == ["body", "role"]
        assert client.get("/admin/api-keys", headers=admin).json()["data"] == []
        defaulted = client.post(
            "/admin/api-keys", json={k: v for k, v in body.items() if k != "role"}, headers=admin
        )
        assert defaulted.status_code == 201, defaulted.text
        assert defaulted.json()["role"] == "user"
