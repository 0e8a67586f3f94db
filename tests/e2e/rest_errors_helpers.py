"""What the tests of the REST errors share: the contract's error body and a check that a
refused request stored nothing (their server and shim are fixtures of tests/e2e/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import func, select

from server.store.models import Agent, Job
from tests.e2e.harness import (
    ServerThread,
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


def nested_arrays(depth: int) -> Any:
    """1 inside `depth` arrays: a value nested as deep as a depth rule needs."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value
