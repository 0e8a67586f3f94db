"""Real server errors arrive as the SDK's exception classes, with their messages and details."""

from __future__ import annotations

import uuid

import grpc
import pytest

from agentq.client import (
    AgentQError,
    AlreadyExists,
    Client,
    Conflict,
    FieldViolation,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    ValidationError,
)
from tests.e2e.harness import token

ROLE = "You answer briefly."


def test_an_unknown_agent_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound) as raised:
        client.agents.get(str(uuid.uuid4()))

    assert raised.value.message == "Agent not found"
    assert (raised.value.code, raised.value.reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


def test_a_bad_field_is_a_validation_error_naming_the_field(client: Client) -> None:
    with pytest.raises(ValidationError) as raised:
        client.agents.create(name="", role=ROLE)

    assert raised.value.reason == "VALIDATION_ERROR"
    assert raised.value.violations == [FieldViolation("name", raised.value.message)]
    assert "name" in raised.value.message.lower()


def test_missing_and_forged_credentials_are_unauthenticated(url: str) -> None:
    with Client(url) as anonymous, pytest.raises(Unauthenticated) as missing:
        list(anonymous.agents.list())
    with Client(url, token="not-a-jwt") as forged, pytest.raises(Unauthenticated) as bad:
        list(forged.agents.list())

    assert missing.value.message == "Missing Authorization header"
    assert bad.value.message == "Invalid token"
    assert bad.value.reason == "UNAUTHORIZED"


def test_a_role_that_may_not_create_agents_is_permission_denied(url: str) -> None:
    with (
        Client(url, token=token("bot", role="agent")) as agent_role,
        pytest.raises(PermissionDenied) as raised,
    ):
        agent_role.agents.create(name="helper", role=ROLE)

    assert raised.value.message == "Insufficient permissions"
    assert raised.value.reason == "FORBIDDEN"


def test_cancelling_a_completed_job_is_a_conflict(client: Client) -> None:
    agent = client.agents.create(name="echo", role=ROLE)
    handle = client.execute(agent.id, "Hello")
    handle.wait(timeout=30)

    with pytest.raises(Conflict) as raised:
        handle.cancel()

    assert type(raised.value) is Conflict
    assert raised.value.message == f"Job {handle.id} is already completed"


def test_a_request_id_reused_for_another_prompt_already_exists(client: Client) -> None:
    agent = client.agents.create(name="echo", role=ROLE)
    first = client.execute(agent.id, "Hello", request_id="same-key")

    with pytest.raises(AlreadyExists) as raised:
        client.execute(agent.id, "Something else", request_id="same-key")

    assert isinstance(raised.value, Conflict) and isinstance(raised.value, AgentQError)
    assert raised.value.message == "Idempotency key reused with a different request"
    assert client.execute(agent.id, "Hello", request_id="same-key").id == first.id
