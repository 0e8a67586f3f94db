"""The tenant trailer goes only to callers that ask for it (the REST shim does)."""

from __future__ import annotations

import grpc
import pytest

from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import agent_service_pb2_grpc as agents_grpc
from tests.e2e.harness import ServerThread, token

TENANT_TRAILER = "x-tenant-id-bin"
TENANT_WANTED = "x-agentq-want-tenant"


def _trailers(server: ServerThread, *extra: tuple[str, str]) -> dict[str, str | bytes]:
    metadata = (("authorization", f"Bearer {token('alice', tenant='acme')}"), *extra)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = agents_grpc.AgentServiceStub(channel)
        _, call = stub.ListAgents.with_call(
            agents_pb.ListAgentsRequest(), metadata=metadata, timeout=10
        )
        return dict(call.trailing_metadata() or ())


def test_a_grpc_call_that_asks_is_told_its_tenant_in_the_trailers(
    server: ServerThread,
) -> None:
    assert _trailers(server, (TENANT_WANTED, "1"))[TENANT_TRAILER] == b"acme"


def test_a_grpc_call_that_does_not_ask_gets_no_tenant_trailer(server: ServerThread) -> None:
    trailers = _trailers(server)

    assert TENANT_TRAILER not in trailers
    # The rate limit's trailers are there as before.
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(trailers)


@pytest.mark.parametrize("asked", [False, True])
def test_a_refused_call_names_no_tenant_it_was_not_admitted_for(
    server: ServerThread, asked: bool
) -> None:
    metadata = [("authorization", "Bearer not-a-token")]
    if asked:
        metadata.append((TENANT_WANTED, "1"))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = agents_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ListAgents(agents_pb.ListAgentsRequest(), metadata=tuple(metadata), timeout=10)
    error = raised.value
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    sent_back = {item.key for item in error.trailing_metadata() or ()}
    assert TENANT_TRAILER not in sent_back
