"""The live service the REST fuzz runs against: a server and shim per kind of database.

`live` starts them once per module, with an agent, a finished job and API keys of the
fuzzer's tenant, so every route is reached past its credential check and its lookups.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.e2e.harness import running_rest, running_server, settings_for, token

if TYPE_CHECKING:
    from schemathesis.specs.openapi.schemas import OpenApiOperation

REQUEST_TIMEOUT_S = 10
FINISHED = {"completed", "failed", "cancelled"}
ADMIN_TOKEN = "fuzz-admin-token-0123456789abcdef"
ALL_SCOPES = ["agents:read", "agents:write", "jobs:read", "jobs:write"]
# The tenant whose limits the fuzz may change: not the fuzzer's own, whose agent and
# job the other runs need (a cap of 0 there would turn every execute into a 429).
LIMITS_TENANT = "fuzzed-tenant"

# A body each route accepts, so that one awkward field is all that differs from it.
VALID_BODIES: dict[str, dict[str, Any]] = {
    "POST /api/v1/agents": {"name": "edge case", "role": "You answer briefly."},
    "POST /api/v1/agents/{agent_id}/execute": {"prompt": "Say hello."},
    "POST /admin/api-keys": {"tenant_id": "edge", "name": "edge case", "scopes": ["jobs:read"]},
    "PUT /admin/tenants/{tenant_id}/limits": {"tier": "free", "max_unfinished_jobs": 5},
}


@dataclass(frozen=True)
class Live:
    """The running shim, a caller's token and API key, and an agent and a finished job.

    DELETE cases get an agent (and an API key) of their own, so the shared ones stay for
    the other runs.
    """

    url: str
    bearer: str
    api_key: str
    agent_id: str
    job_id: str
    doomed_agent_id: str
    doomed_key_id: str

    def credentials_for(self, operation: OpenApiOperation) -> dict[str, str]:
        """The headers that get a caller past this operation's credential check."""
        if operation.path.startswith("/admin/"):
            return {"X-Admin-API-Key": ADMIN_TOKEN}
        if operation.path == "/api/v1/tokens":
            return {"X-API-Key": self.api_key}
        return {"Authorization": f"Bearer {self.bearer}"}

    def ids_for(self, operation: OpenApiOperation) -> dict[str, str]:
        """Existing ids (and a tenant) for the path parameters the operation has."""
        agent_id = self.doomed_agent_id if operation.method.upper() == "DELETE" else self.agent_id
        known = {
            "agent_id": agent_id,
            "job_id": self.job_id,
            "key_id": self.doomed_key_id,
            "tenant_id": LIMITS_TENANT,
        }
        return {p.name: known[p.name] for p in operation.path_parameters if p.name in known}


def _agent(client: httpx.Client) -> str:
    created = client.post("/api/v1/agents", json=VALID_BODIES["POST /api/v1/agents"])
    assert created.status_code == 201, created.text
    agent_id: str = created.json()["id"]
    return agent_id


def _finished_job(client: httpx.Client, agent_id: str) -> str:
    queued = client.post(f"/api/v1/agents/{agent_id}/execute", json={"prompt": "Say hello."})
    assert queued.status_code == 202, queued.text
    job_id: str = queued.json()["job_id"]
    deadline = time.monotonic() + 30
    while client.get(f"/api/v1/jobs/{job_id}").json()["status"] not in FINISHED:
        assert time.monotonic() < deadline, f"job {job_id} did not finish"
        time.sleep(0.05)
    return job_id


def _api_key(client: httpx.Client, name: str) -> tuple[str, str]:
    """A new API key of the fuzzer's tenant with every scope: its id and the key."""
    created = client.post(
        "/admin/api-keys",
        json={"tenant_id": "fuzzer", "name": name, "scopes": ALL_SCOPES},
        headers={"X-Admin-API-Key": ADMIN_TOKEN},
    )
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["key"]


@contextmanager
def _database(request: pytest.FixtureRequest, kind: str) -> Iterator[str]:
    """A fresh database of one kind agentq stores jobs in."""
    if kind == "postgres":
        postgres = request.getfixturevalue("postgres_server")
        with contextmanager(postgres.throwaway_database)() as url:
            yield url
    else:
        directory = request.getfixturevalue("tmp_path_factory").mktemp("fuzz")
        yield f"sqlite:///{directory / 'agentq.db'}"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def live(request: pytest.FixtureRequest) -> Iterator[Live]:
    """One server and shim per kind of database, shared by every fuzz run of the module."""
    bearer = token("fuzzer")
    with (
        _database(request, request.param) as database_url,
        running_server(
            settings_for(database_url=database_url, admin_token=ADMIN_TOKEN),
            in_process_workers=True,
        ) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
        httpx.Client(base_url=rest.url, timeout=REQUEST_TIMEOUT_S) as client,
    ):
        client.headers["Authorization"] = f"Bearer {bearer}"
        agent_id, doomed_agent_id = (_agent(client), _agent(client))
        _, api_key = _api_key(client, "fuzzer key")
        doomed_key_id, _ = _api_key(client, "doomed key")
        yield Live(
            url=rest.url,
            bearer=bearer,
            api_key=api_key,
            agent_id=agent_id,
            job_id=_finished_job(client, agent_id),
            doomed_agent_id=doomed_agent_id,
            doomed_key_id=doomed_key_id,
        )
