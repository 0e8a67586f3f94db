"""REST requests as vex-api clients send them: UUID spellings, unknown and omitted fields,
and request ids on every response."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from server.store.models import Job
from tests.e2e.harness import RestThread, ServerThread, token
from tests.e2e.rest_helpers import CANONICAL_UUID, create_agent, http_client


@pytest.fixture
def http(rest: RestThread) -> Iterator[httpx.Client]:
    """An HTTP client of the shim carrying a valid user token."""
    with http_client(rest.url, token()) as client:
        yield client


@pytest.mark.parametrize(
    "spell",
    [str.upper, lambda canonical: uuid.UUID(canonical).hex, lambda c: uuid.UUID(c).hex.upper()],
    ids=["uppercase", "unhyphenated", "unhyphenated-uppercase"],
)
def test_other_spellings_of_a_uuid_in_the_path_find_the_same_agent_and_job(
    http: httpx.Client, spell: Any
) -> None:
    agent = create_agent(http)
    fetched = http.get(f"/api/v1/agents/{spell(agent['id'])}")
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == agent

    acked = http.post(f"/api/v1/agents/{spell(agent['id'])}/execute", json={"prompt": "hi"})
    assert acked.status_code == 202, acked.text
    job_id = acked.json()["job_id"]
    assert acked.json()["agent_id"] == agent["id"]
    assert CANONICAL_UUID.fullmatch(job_id)

    job = http.get(f"/api/v1/jobs/{spell(job_id)}")
    assert job.status_code == 200, job.text
    assert job.json()["job_id"] == job_id
    assert job.json()["agent_id"] == agent["id"]


def test_unknown_request_fields_are_ignored(http: httpx.Client, embedded: ServerThread) -> None:
    created = http.post(
        "/api/v1/agents",
        json={
            "name": "helper",
            "role": "You are a helpful assistant.",
            "colour": "blue",
            "id": "00000000-0000-4000-8000-000000000000",
            "generation": 7,
            "fitness": 0.9,
        },
    )
    assert created.status_code == 201, created.text
    agent = created.json()
    assert agent["id"] != "00000000-0000-4000-8000-000000000000"
    assert (agent["generation"], agent["fitness"]) == (0, 0.0)

    acked = http.post(
        f"/api/v1/agents/{agent['id']}/execute",
        json={"prompt": "hi", "temperature": 0.2, "job_id": "00000000-0000-4000-8000-000000000000"},
    )
    assert acked.status_code == 202, acked.text
    assert acked.json()["job_id"] != "00000000-0000-4000-8000-000000000000"


def test_omitted_fields_take_their_defaults(http: httpx.Client, embedded: ServerThread) -> None:
    created = http.post("/api/v1/agents", json={"name": "helper", "role": "abc"})
    assert created.status_code == 201, created.text
    assert created.json()["max_depth"] == 3
    assert created.json()["spawn_shadow"] is False

    acked = http.post(f"/api/v1/agents/{created.json()['id']}/execute", json={"prompt": "hi"})
    assert acked.status_code == 202, acked.text
    with embedded.engine.connect() as connection:
        job = connection.execute(select(Job).where(Job.id == acked.json()["job_id"])).one()
    assert job.context_id is None
    assert job.enable_adversarial is False
    assert job.enable_self_correction is False
    assert job.max_debate_rounds == 3


def test_given_fields_are_stored_on_the_agent_and_the_job(
    http: httpx.Client, embedded: ServerThread
) -> None:
    agent = create_agent(http, max_depth=0, spawn_shadow=True)
    assert (agent["max_depth"], agent["spawn_shadow"]) == (0, True)
    assert http.get(f"/api/v1/agents/{agent['id']}").json() == agent

    acked = http.post(
        f"/api/v1/agents/{agent['id']}/execute",
        json={
            "prompt": "hi",
            "context_id": "ctx-42",
            "enable_adversarial": True,
            "enable_self_correction": True,
            "max_debate_rounds": 10,
        },
    )
    assert acked.status_code == 202, acked.text
    with embedded.engine.connect() as connection:
        job = connection.execute(select(Job).where(Job.id == acked.json()["job_id"])).one()
    assert job.context_id == "ctx-42"
    assert job.enable_adversarial is True
    assert job.enable_self_correction is True
    assert job.max_debate_rounds == 10


def _is_generated_request_id(value: str | None) -> bool:
    return value is not None and CANONICAL_UUID.fullmatch(value) is not None


def test_a_sane_request_id_is_echoed_on_success_and_on_error(
    http: httpx.Client, rest: RestThread
) -> None:
    sent = {"X-Request-ID": "abc-123"}
    assert http.get("/health", headers=sent).headers.get("x-request-id") == "abc-123"
    agent = http.post(
        "/api/v1/agents", json={"name": "helper", "role": "abc"}, headers=sent
    ).headers
    assert agent.get("x-request-id") == "abc-123"
    missing = http.get(f"/api/v1/agents/{uuid.uuid4()}", headers=sent)
    assert missing.status_code == 404
    assert missing.headers.get("x-request-id") == "abc-123"
    unauthorized = httpx.get(f"{rest.url}/api/v1/jobs/{uuid.uuid4()}", headers=sent, timeout=10)
    assert unauthorized.status_code == 401
    assert unauthorized.headers.get("x-request-id") == "abc-123"


@pytest.mark.parametrize(
    "sent",
    ["x" * 300, "abc 123", "abc\t123", "<script>", "a/b", ""],
    ids=["300-chars", "space", "tab", "markup", "slash", "empty"],
)
def test_an_insane_request_id_is_replaced_by_a_new_uuid(http: httpx.Client, sent: str) -> None:
    response = http.get("/health", headers={"X-Request-ID": sent})
    assert response.status_code == 200
    assert _is_generated_request_id(response.headers.get("x-request-id")), response.headers


def test_without_a_request_id_each_response_gets_a_new_uuid(http: httpx.Client) -> None:
    first = http.get("/health").headers.get("x-request-id")
    second = http.get("/health").headers.get("x-request-id")
    assert _is_generated_request_id(first)
    assert _is_generated_request_id(second)
    assert first != second


def test_every_kind_of_error_carries_the_request_id(http: httpx.Client) -> None:
    agent_id = create_agent(http)["id"]
    sent = {"X-Request-ID": "req.42:retry-1"}
    too_large = b'{"name": "' + b"x" * (1024 * 1024) + b'", "role": "abc"}'
    requests = [
        (404, http.build_request("GET", "/api/v1/nope")),
        (404, http.build_request("GET", f"/api/v1/jobs/{uuid.uuid4()}")),
        (405, http.build_request("DELETE", "/api/v1/agents")),
        (
            413,
            http.build_request(
                "POST",
                "/api/v1/agents",
                content=too_large,
                headers={"Content-Type": "application/json"},
            ),
        ),
        (
            415,
            http.build_request(
                "POST", "/api/v1/agents", content=b"name=x", headers={"Content-Type": "text/plain"}
            ),
        ),
        (422, http.build_request("POST", "/api/v1/agents", json={"role": "abc"})),
        (
            422,
            http.build_request("POST", f"/api/v1/agents/{agent_id}/execute", json={"prompt": " "}),
        ),
        (422, http.build_request("GET", "/api/v1/agents/not-a-uuid")),
    ]
    for status, request in requests:
        request.headers.update(sent)
        response = http.send(request)
        assert response.status_code == status, (request.url, response.text)
        assert response.headers.get("x-request-id") == "req.42:retry-1", request.url
