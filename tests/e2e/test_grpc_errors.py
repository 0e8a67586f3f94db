"""Every auth, tenant and validation rule over real gRPC: exact code, message and details."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import func, select

from agentq.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    job_service_pb2,
    job_service_pb2_grpc,
)
from server.store.models import Agent, Job
from tests.e2e.harness import ServerThread, claims, rpc_error, signed, token


def _count(server: ServerThread, model: type[Agent] | type[Job]) -> int:
    with server.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(model)).scalar_one())


BAD_CREDENTIALS = [
    (None, "Missing Authorization header"),
    ("Basic abc", "Invalid Authorization header format"),
    ("Bearer", "Invalid Authorization header format"),
    ("Bearer not-a-jwt", "Invalid token"),
    ("Bearer " + signed(claims(exp=int(time.time()) - 3600)), "Token expired"),
    (
        "Bearer " + signed(claims(), secret="another-secret-" + "x" * 32),
        "Token validation failed: InvalidSignature",
    ),
    ("Bearer " + signed(claims(iss="someone-else")), "Token validation failed: InvalidIssuer"),
    ("Bearer " + signed(claims(aud="elsewhere")), "Token validation failed: InvalidAudience"),
    ("Bearer " + signed(claims(), alg="HS512"), "Token validation failed: InvalidAlgorithm"),
    ("Bearer " + signed(claims(role=None)), "Token validation failed: MissingClaim(role)"),
    ("Bearer " + signed(claims(sub=None)), "Token validation failed: MissingClaim(sub)"),
]


@pytest.mark.parametrize(("header", "message"), BAD_CREDENTIALS)
def test_bad_credentials_are_unauthenticated_with_the_contract_message(
    embedded: ServerThread, header: str | None, message: str
) -> None:
    with embedded.client() as client:
        metadata = () if header is None else (("authorization", header),)
        stub_call: grpc.UnaryUnaryMultiCallable[agent_service_pb2.CreateAgentRequest, bytes]
        stub_call = client.channel.unary_unary(
            "/agentq.v1.AgentService/CreateAgent",
            request_serializer=lambda r: r.SerializeToString(),
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as raised:
            stub_call(
                agent_service_pb2.CreateAgentRequest(name="x", role="abc"),
                metadata=metadata,
                timeout=10,
            )
    assert rpc_error(raised.value)[:3] == (grpc.StatusCode.UNAUTHENTICATED, message, "UNAUTHORIZED")
    assert _count(embedded, Agent) == 0


AMBIGUOUS_CREDENTIALS = [
    pytest.param(
        (
            ("authorization", f"Bearer {token('alice')}"),
            ("authorization", f"Bearer {token('bob')}"),
        ),
        "Invalid Authorization header format",
        id="two-authorizations",
    ),
    pytest.param(
        (("authorization", f"Bearer {token('alice')}"),) * 2,
        "Invalid Authorization header format",
        id="the-same-authorization-twice",
    ),
    pytest.param(
        (("x-api-key", "agq_" + "x" * 43), ("x-api-key", "agq_" + "y" * 43)),
        "Invalid API key",
        id="two-api-keys",
    ),
]


@pytest.mark.parametrize(("metadata", "message"), AMBIGUOUS_CREDENTIALS)
def test_a_credential_sent_twice_is_unauthenticated_whatever_the_values(
    embedded: ServerThread, metadata: tuple[tuple[str, str], ...], message: str
) -> None:
    with embedded.client() as client:
        stub = agent_service_pb2_grpc.AgentServiceStub(client.channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.CreateAgent(
                agent_service_pb2.CreateAgentRequest(name="x", role="abc"),
                metadata=metadata,
                timeout=10,
            )
    assert rpc_error(raised.value)[:3] == (grpc.StatusCode.UNAUTHENTICATED, message, "UNAUTHORIZED")
    assert _count(embedded, Agent) == 0


def test_an_agent_role_may_execute_but_not_create_agents(embedded: ServerThread) -> None:
    with embedded.client(token("owner")) as owner:
        agent = owner.create_agent()
    with embedded.client(token("owner", role="agent")) as caller:
        with pytest.raises(grpc.RpcError) as raised:
            caller.create_agent()
        assert rpc_error(raised.value)[:3] == (
            grpc.StatusCode.PERMISSION_DENIED,
            "Insufficient permissions",
            "FORBIDDEN",
        )
        assert caller.execute(agent.id).response.startswith("Job queued: ")
    assert _count(embedded, Agent) == 1


def test_an_unknown_role_is_forbidden_everywhere(embedded: ServerThread) -> None:
    with (
        embedded.client(token("eve", role="viewer")) as client,
        pytest.raises(grpc.RpcError) as raised,
    ):
        client.get_job("6f1c2a4e-0000-4000-8000-000000000000")
    assert rpc_error(raised.value)[:2] == (
        grpc.StatusCode.PERMISSION_DENIED,
        "Insufficient permissions",
    )


def test_another_tenants_agent_and_job_answer_like_ids_that_do_not_exist(
    embedded: ServerThread,
) -> None:
    with embedded.client(token("alice")) as alice:
        agent = alice.create_agent()
        job_id = alice.execute(agent.id).job_id
    with embedded.client(token("bob")) as bob:
        calls: list[tuple[Callable[[], object], str]] = [
            (lambda: bob.get_agent(agent.id), "Agent not found"),
            (lambda: bob.execute(agent.id), "Agent not found"),
            (lambda: bob.get_job(job_id), f"Job {job_id} not found"),
        ]
        for call, message in calls:
            with pytest.raises(grpc.RpcError) as raised:
                call()
            assert rpc_error(raised.value)[:3] == (grpc.StatusCode.NOT_FOUND, message, "NOT_FOUND")
    assert _count(embedded, Job) == 1


def test_the_tenant_claim_groups_subjects_into_one_tenant(embedded: ServerThread) -> None:
    with embedded.client(token("alice", tenant="acme")) as alice:
        agent = alice.create_agent()
    with embedded.client(token("bob", tenant="acme")) as bob:
        assert bob.get_agent(agent.id).id == agent.id


def test_invalid_agent_fields_are_all_reported_and_nothing_is_stored(
    embedded: ServerThread,
) -> None:
    with embedded.client(token()) as client, pytest.raises(grpc.RpcError) as raised:
        client.create_agent(name="bad!name", role="ab", max_depth=11)
    code, message, reason, violations = rpc_error(raised.value)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR")
    assert message == "Invalid name: only letters, digits, spaces, '-' and '_' are allowed"
    assert violations == [
        ("name", "Invalid name: only letters, digits, spaces, '-' and '_' are allowed"),
        ("role", "Invalid role: must be 3 to 500 characters after trimming"),
        ("max_depth", "max_depth exceeds safety limit of 10"),
    ]
    assert _count(embedded, Agent) == 0


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        (
            {"prompt": "   "},
            "prompt",
            "Invalid prompt: must be 1 to 50000 characters after trimming",
        ),
        (
            {"prompt": "x" * 50_001},
            "prompt",
            "Invalid prompt: must be 1 to 50000 characters after trimming",
        ),
        (
            {"max_debate_rounds": 0},
            "max_debate_rounds",
            "Invalid max_debate_rounds: must be between 1 and 10",
        ),
        (
            {"max_debate_rounds": 11},
            "max_debate_rounds",
            "Invalid max_debate_rounds: must be between 1 and 10",
        ),
        (
            {"context_id": ""},
            "context_id",
            "Invalid context_id: must be 1 to 128 characters of A-Za-z0-9._:-",
        ),
        (
            {"context_id": "c" * 129},
            "context_id",
            "Invalid context_id: must be 1 to 128 characters of A-Za-z0-9._:-",
        ),
        (
            {"context_id": "a context"},
            "context_id",
            "Invalid context_id: must be 1 to 128 characters of A-Za-z0-9._:-",
        ),
    ],
)
def test_invalid_execute_fields_store_no_job(
    embedded: ServerThread, fields: dict[str, object], field: str, message: str
) -> None:
    with embedded.client(token()) as client:
        agent = client.create_agent()
        fields.setdefault("prompt", "hello")
        prompt = fields.pop("prompt")
        assert isinstance(prompt, str)
        with pytest.raises(grpc.RpcError) as raised:
            client.execute(agent.id, prompt=prompt, **fields)
    assert rpc_error(raised.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
        "VALIDATION_ERROR",
        [(field, message)],
    )
    assert _count(embedded, Job) == 0


def test_ids_that_are_not_uuids_are_invalid_arguments(embedded: ServerThread) -> None:
    with embedded.client(token()) as client:
        calls: list[tuple[Callable[[], object], str]] = [
            (lambda: client.get_agent("nope"), "agent_id"),
            (lambda: client.execute("nope"), "agent_id"),
            (lambda: client.get_job("nope"), "job_id"),
        ]
        for call, field in calls:
            with pytest.raises(grpc.RpcError) as raised:
                call()
            message = f"Invalid {field}: must be a UUID"
            assert rpc_error(raised.value) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                message,
                "VALIDATION_ERROR",
                [(field, message)],
            )


def test_uppercase_ids_find_the_same_agent(embedded: ServerThread) -> None:
    with embedded.client(token()) as client:
        agent = client.create_agent()
        assert client.get_agent(agent.id.upper()).id == agent.id


def test_health_answers_without_a_token(embedded: ServerThread) -> None:
    with embedded.client() as client:
        stub = health_pb2_grpc.HealthStub(client.channel)
        for service in ("", "agentq.v1.AgentService", "agentq.v1.JobService"):
            # The stubs of grpcio-health-checking leave out the generated methods.
            reply = stub.Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=service), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services_to_an_authenticated_caller(embedded: ServerThread) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with embedded.client(token()) as client:
        stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
        # The stubs of grpcio-reflection give its method no type.
        replies = list(
            stub.ServerReflectionInfo(  # type: ignore[operator]
                iter([request]), metadata=client.metadata, timeout=10
            )
        )
        names = {s.name for s in replies[0].list_services_response.service}
        assert {"agentq.v1.AgentService", "agentq.v1.JobService"} <= names
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.ServerReflectionInfo(iter([request]), timeout=10))  # type: ignore[operator]
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_every_error_echoes_the_callers_request_id(embedded: ServerThread) -> None:
    with embedded.client() as client:
        stub = job_service_pb2_grpc.JobServiceStub(client.channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetJob(
                job_service_pb2.GetJobRequest(job_id="x"),
                metadata=(("x-request-id", "req-123"),),
                timeout=10,
            )
    assert ("x-request-id", "req-123") in _trailers(raised.value)


def _trailers(error: grpc.RpcError) -> list[tuple[str, str | bytes]]:
    """The trailing metadata of a failed call: text, or bytes for the `-bin` keys."""
    return [(item.key, item.value) for item in error.trailing_metadata()]


NOT_A_MESSAGE = b"\xff\xff\xff"  # a varint tag that never ends


def _not_a_message(_: None) -> bytes:
    return NOT_A_MESSAGE


@pytest.mark.parametrize(
    "method", ["/agentq.v1.AgentService/CreateAgent", "/agentq.v1.JobService/WatchJob"]
)
def test_a_request_that_is_not_a_message_is_an_invalid_argument_without_internals(
    embedded: ServerThread, method: str
) -> None:
    with embedded.client(token("alice")) as client, pytest.raises(grpc.RpcError) as raised:
        if "Watch" in method:
            stream: grpc.UnaryStreamMultiCallable[None, bytes]
            stream = client.channel.unary_stream(method, request_serializer=_not_a_message)
            list(stream(None, metadata=client.metadata, timeout=10))
        else:
            send: grpc.UnaryUnaryMultiCallable[None, bytes]
            send = client.channel.unary_unary(method, request_serializer=_not_a_message)
            send(None, metadata=client.metadata, timeout=10)
    assert rpc_error(raised.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid request: the message could not be parsed",
        "VALIDATION_ERROR",
        [],
    )
    assert _count(embedded, Agent) == 0


def test_a_streamed_request_that_is_not_a_message_is_an_invalid_argument(
    embedded: ServerThread,
) -> None:
    with embedded.client(token("alice")) as client:
        send: grpc.StreamStreamMultiCallable[None, bytes] = client.channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=_not_a_message,
        )
        with pytest.raises(grpc.RpcError) as raised:
            list(send(iter([None]), metadata=client.metadata, timeout=10))
    assert rpc_error(raised.value)[:3] == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid request: the message could not be parsed",
        "VALIDATION_ERROR",
    )


def test_a_request_that_is_not_a_message_still_needs_credentials(embedded: ServerThread) -> None:
    with embedded.client() as client:
        send: grpc.UnaryUnaryMultiCallable[None, bytes] = client.channel.unary_unary(
            "/agentq.v1.AgentService/CreateAgent", request_serializer=_not_a_message
        )
        with pytest.raises(grpc.RpcError) as raised:
            send(None, timeout=10)
    assert rpc_error(raised.value)[:3] == (
        grpc.StatusCode.UNAUTHENTICATED,
        "Missing Authorization header",
        "UNAUTHORIZED",
    )
