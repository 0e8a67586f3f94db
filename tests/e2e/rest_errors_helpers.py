"""What the tests of the REST errors share: the contract's error body, a check that a
refused request stored nothing, and one server and shim per test module (pytest finds the
fixtures below among the attributes of each module that takes them)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from server.store.models import Agent, Job
from tests.e2e.harness import (
    RestThread,
    ServerThread,
    running_rest,
    running_server,
    settings_for,
    token,
)

VALID_AGENT = {"name": "helper", "role": "You are a helpful assistant."}
SOME_ID = "6f1c2a4e-0000-4000-8000-000000000000"


def assert_error(
    response: httpx.Response, status: int, code: str, message: str | None = None
) -> dict[str, Any]:
    """The one error body of docs/contract.md §2, with a string `detail` equal to the message."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"detail", "error"}, body
    assert set(body["error"]) == {"code", "message", "status"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["status"] == status, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    if status != 422:
        assert body["detail"] == body["error"]["message"], body
    if message is not None:
        assert body["error"]["message"] == message, body
    return body


def assert_validation_error(
    response: httpx.Response, violations: list[tuple[list[str], str | None]]
) -> None:
    """422 with FastAPI's detail list: each entry's loc and (when given) msg, in order."""
    body = assert_error(response, 422, "VALIDATION_ERROR")
    detail = body["detail"]
    assert isinstance(detail, list), body
    for entry in detail:
        assert set(entry) == {"loc", "msg", "type"}, entry
        assert isinstance(entry["msg"], str) and entry["msg"], entry
        assert isinstance(entry["type"], str) and entry["type"], entry
    assert [entry["loc"] for entry in detail] == [loc for loc, _ in violations], body
    for entry, (_, msg) in zip(detail, violations, strict=True):
        if msg is not None:
            assert entry["msg"] == msg, body
    assert body["error"]["message"] == detail[0]["msg"], body


def stored_rows(server: ServerThread) -> tuple[int, int]:
    """How many agents and jobs the database holds."""
    with server.engine.connect() as connection:
        return (
            int(connection.execute(select(func.count()).select_from(Agent)).scalar_one()),
            int(connection.execute(select(func.count()).select_from(Job)).scalar_one()),
        )


@contextmanager
def nothing_stored(server: ServerThread) -> Iterator[None]:
    """Asserts that the block stored no agent and no job."""
    before = stored_rows(server)
    yield
    assert stored_rows(server) == before, "a refused request stored something"


# One server and shim for each test module: every test that takes them is a refused request
# (checked to store nothing) or makes its own agents, so they cannot disturb each other.
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """The embedded default (a SQLite file, in-process workers) shared by this module."""
    database = tmp_path_factory.mktemp("rest-errors") / "agentq.db"
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
