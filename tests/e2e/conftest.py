"""Fixtures that start agentq for real: embedded (SQLite, in-process queue) and scaled out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import (
    RestThread,
    ServerThread,
    running_rest,
    running_server,
    settings_for,
    token,
)
from tests.e2e.rest_errors_helpers import VALID_AGENT
from tests.e2e.workflow_helpers import Stack, Tenant, tenant_on, workflow_stack


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[ServerThread]:
    """The embedded default: a SQLite file and in-process workers."""
    settings = settings_for(database_url=f"sqlite:///{tmp_path / 'agentq.db'}")
    with running_server(settings, in_process_workers=True) as server:
        yield server


@pytest.fixture
def scaled_settings(fresh_postgres_url: str, redis_url: str, redis_namespace: str):  # type: ignore[no-untyped-def]
    """Settings for PostgreSQL + Redis with separate workers."""
    return settings_for(
        database_url=fresh_postgres_url, redis_url=redis_url, redis_namespace=redis_namespace
    )


@pytest.fixture
def rest(embedded: ServerThread) -> Iterator[RestThread]:
    """The REST shim over real HTTP in front of the embedded server."""
    with running_rest(f"127.0.0.1:{embedded.port}") as shim:
        yield shim


# One server and shim for each test module that takes them: every test that does is a refused
# request (checked to store nothing) or makes its own agents, so they cannot disturb each other.
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """The embedded default (a SQLite file, in-process workers) shared by this module."""
    database = tmp_path_factory.mktemp("shared") / "agentq.db"
    with running_server(
        settings_for(database_url=f"sqlite:///{database}"), in_process_workers=True
    ) as started:
        yield started


@pytest.fixture(scope="module")
def shim(server: ServerThread) -> Iterator[RestThread]:
    """The REST shim over real HTTP in front of the shared server."""
    with running_rest(f"127.0.0.1:{server.port}") as started:
        yield started


@pytest.fixture
def anonymous(shim: RestThread) -> Iterator[httpx.Client]:
    """An HTTP client of the shim with no credentials."""
    with httpx.Client(base_url=shim.url, timeout=10) as client:
        yield client


@pytest.fixture
def http(shim: RestThread) -> Iterator[httpx.Client]:
    """An HTTP client of the shim carrying a valid user token for tenant alice."""
    headers = {"Authorization": f"Bearer {token('alice')}"}
    with httpx.Client(base_url=shim.url, timeout=10, headers=headers) as client:
        yield client


@pytest.fixture(scope="module")
def agent_id(shim: RestThread) -> str:
    """An agent of tenant alice, created over REST."""
    headers = {"Authorization": f"Bearer {token('alice')}"}
    response = httpx.post(
        f"{shim.url}/api/v1/agents", json=VALID_AGENT, headers=headers, timeout=10
    )
    assert response.status_code == 201, response.text
    created: str = response.json()["id"]
    return created


@pytest.fixture(scope="module")
def workflow_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """An embedded server and shim for a module's workflow tests, with the settings its
    WORKFLOW_SETTINGS holds (tests/e2e/workflow_helpers.py)."""
    with workflow_stack(
        tmp_path_factory, **getattr(request.module, "WORKFLOW_SETTINGS", {})
    ) as started:
        yield started


@pytest.fixture
def tenant(workflow_server: Stack) -> Iterator[Tenant]:
    """A user of a new tenant on the module's workflow server."""
    with tenant_on(workflow_server) as user:
        yield user
