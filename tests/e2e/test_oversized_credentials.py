"""Credentials over 8 KiB are refused as such on both faces, never reported as rate limiting.

gRPC's transport refuses metadata over its own limit with RESOURCE_EXHAUSTED, the code
of agentq's rate limits: by default a random share of calls between 8 and 16 KiB, and
every call above. The shim answers 431 before forwarding, and the server, whose
transport leaves room above the limit, UNAUTHENTICATED with an ErrorInfo, so every
size band gets one answer, every time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent import futures

import grpc
import httpx
import pytest

from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import agent_service_pb2_grpc as agents_grpc
from rest_shim import credential_size as shim_limit
from server.api import credential_size as server_limit
from tests.e2e.harness import (
    RestThread,
    ServerThread,
    rpc_error,
    running_rest,
)

LIMIT = 8 * 1024
TOO_LARGE = (431, "REQUEST_HEADER_FIELDS_TOO_LARGE", "Credentials exceed the limit of 8192 bytes")
INVALID = (401, "UNAUTHORIZED", "Invalid token")
# The transport refused a share of calls at random between its soft and hard limits, so
# each size is sent this many times and must get the same answer every time.
REPEATS = 12
# The bands of the report: under the limit, between grpcio's default soft (8 KiB) and hard
# (16 KiB) limits, above the hard limit, and far above it.
BANDS = [
    pytest.param(7, INVALID, id="7KiB"),
    pytest.param(9, TOO_LARGE, id="9KiB"),
    pytest.param(15, TOO_LARGE, id="15KiB"),
    pytest.param(17, TOO_LARGE, id="17KiB"),
    pytest.param(64, TOO_LARGE, id="64KiB"),
]


def _bearer(size: int) -> str:
    """An Authorization value of exactly `size` bytes: a token no server issued."""
    return "Bearer " + "x" * (size - len("Bearer "))


def _rest_answers(
    shim: RestThread, headers: list[tuple[str, str]], *, path: str = "/api/v1/agents"
) -> Counter[tuple[int, str, str]]:
    answers: Counter[tuple[int, str, str]] = Counter()
    with httpx.Client(base_url=shim.url, timeout=10) as client:
        for _ in range(REPEATS):
            response = client.get(path, headers=headers)
            body = response.json()
            assert body["detail"] == body["error"]["message"], body
            assert body["error"]["status"] == response.status_code, body
            assert response.headers.get("x-request-id"), response.headers
            assert "x-ratelimit-limit" not in response.headers, response.headers
            answers[(response.status_code, body["error"]["code"], body["error"]["message"])] += 1
    return answers


def _grpc_answers(
    server: ServerThread, metadata: list[tuple[str, str]]
) -> Counter[tuple[grpc.StatusCode, str, str]]:
    sent = tuple(metadata)
    answers: Counter[tuple[grpc.StatusCode, str, str]] = Counter()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = agents_grpc.AgentServiceStub(channel)
        for _ in range(REPEATS):
            with pytest.raises(grpc.RpcError) as raised:
                stub.ListAgents(agents_pb.ListAgentsRequest(), metadata=sent, timeout=10)
            code, message, reason, _ = rpc_error(raised.value)
            answers[(code, reason, message)] += 1
    return answers


def test_the_shim_and_the_server_count_to_the_same_limit() -> None:
    # The shim never imports the server, so each states the limit; they must agree.
    assert shim_limit.MAX_CREDENTIAL_BYTES == server_limit.MAX_CREDENTIAL_BYTES == LIMIT
    # The transport must let a credential far over the limit through to be refused by name.
    assert server_limit.MAX_METADATA_BYTES > 64 * 1024 + 1024


@pytest.mark.parametrize(("kib", "expected"), BANDS)
def test_an_authorization_header_gets_one_answer_per_size_over_rest(
    shim: RestThread, kib: int, expected: tuple[int, str, str]
) -> None:
    answers = _rest_answers(shim, [("Authorization", _bearer(kib * 1024))])
    assert answers == Counter({expected: REPEATS})


@pytest.mark.parametrize(("kib", "expected"), BANDS)
def test_authorization_metadata_gets_one_answer_per_size_over_grpc(
    server: ServerThread, kib: int, expected: tuple[int, str, str]
) -> None:
    answers = _grpc_answers(server, [("authorization", _bearer(kib * 1024))])
    _, reason, message = expected
    assert answers == Counter({(grpc.StatusCode.UNAUTHENTICATED, reason, message): REPEATS})


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param(LIMIT, INVALID, id="at-the-limit"),
        pytest.param(LIMIT + 1, TOO_LARGE, id="one-byte-over"),
    ],
)
def test_the_limit_is_the_same_byte_on_both_faces(
    shim: RestThread, server: ServerThread, size: int, expected: tuple[int, str, str]
) -> None:
    assert _rest_answers(shim, [("Authorization", _bearer(size))]) == Counter({expected: REPEATS})
    _, reason, message = expected
    answers = _grpc_answers(server, [("authorization", _bearer(size))])
    assert answers == Counter({(grpc.StatusCode.UNAUTHENTICATED, reason, message): REPEATS})


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([("X-API-Key", "agq_" + "x" * LIMIT)], id="api-key"),
        pytest.param([("X-Admin-API-Key", "x" * (LIMIT + 1))], id="admin-token"),
        # Each copy is under the limit; together they are over it.
        pytest.param(
            [("Authorization", _bearer(5000)), ("Authorization", _bearer(5000))], id="two-copies"
        ),
        pytest.param(
            [("Authorization", _bearer(5000)), ("X-API-Key", "agq_" + "x" * 5000)], id="two-kinds"
        ),
    ],
)
def test_every_credential_header_counts_towards_the_limit(
    shim: RestThread, server: ServerThread, headers: list[tuple[str, str]]
) -> None:
    assert _rest_answers(shim, headers) == Counter({TOO_LARGE: REPEATS})
    metadata = [(name.lower(), value) for name, value in headers]
    _, reason, message = TOO_LARGE
    answers = _grpc_answers(server, metadata)
    assert answers == Counter({(grpc.StatusCode.UNAUTHENTICATED, reason, message): REPEATS})


def test_an_oversized_credential_is_refused_on_the_public_and_the_admin_routes(
    shim: RestThread,
) -> None:
    oversized = [("Authorization", _bearer(9 * 1024)), ("X-Admin-API-Key", "x" * 40)]
    for path in ("/health", "/admin/api-keys", "/no/such/route"):
        assert _rest_answers(shim, oversized, path=path) == Counter({TOO_LARGE: REPEATS}), path


def test_a_credential_far_over_the_transport_limit_is_still_431_over_rest(
    shim: RestThread,
) -> None:
    size = server_limit.MAX_METADATA_BYTES * 2
    assert _rest_answers(shim, [("Authorization", _bearer(size))]) == Counter({TOO_LARGE: REPEATS})


def test_over_grpc_metadata_past_the_transport_limit_is_refused_by_the_transport(
    server: ServerThread,
) -> None:
    # The one band agentq cannot answer itself: the transport refuses the call before any
    # handler runs, with no agentq details, so it cannot be mistaken for agentq's limits.
    metadata = (("authorization", _bearer(server_limit.MAX_METADATA_BYTES + 1024)),)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = agents_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ListAgents(agents_pb.ListAgentsRequest(), metadata=metadata, timeout=10)
    error = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "metadata size exceeds" in (error.details() or "")
    trailers = {item.key: item.value for item in error.trailing_metadata() or ()}
    assert "grpc-status-details-bin" not in trailers, trailers


@pytest.fixture
def narrow_backend() -> Iterator[str]:
    """A gRPC server whose transport takes 1 KiB of metadata: it refuses every agentq call."""
    backend = grpc.server(
        futures.ThreadPoolExecutor(max_workers=1),
        options=[("grpc.max_metadata_size", 1024), ("grpc.absolute_max_metadata_size", 1024)],
    )
    port = backend.add_insecure_port("127.0.0.1:0")
    backend.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        backend.stop(grace=None)


def test_a_transport_refusal_behind_the_shim_is_an_internal_error_not_a_rate_limit(
    narrow_backend: str,
) -> None:
    with (
        running_rest(narrow_backend) as rest,
        httpx.Client(base_url=rest.url, timeout=10) as client,
    ):
        response = client.get("/api/v1/agents", headers={"Authorization": _bearer(2048)})
    assert response.status_code == 500, response.text
    assert response.json()["error"] == {
        "code": "INTERNAL_ERROR",
        "message": "An internal error occurred",
        "status": 500,
    }
    assert "retry-after" not in response.headers, response.headers
