"""Failed credential checks are throttled per client address, over REST and gRPC alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import agent_service_pb2_grpc as agents_grpc
from server.api.failures import TOO_MANY_FAILURES
from tests.e2e.harness import ServerThread, running_rest, running_server, settings_for, token

UNKNOWN_KEY = "agq_" + "x" * 43
FAILURE_BURST = 20
AGENTS = "/api/v1/agents"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    settings = settings_for(
        database_url=f"sqlite:///{tmp_path / 'agentq.db'}", auth_failure_burst=FAILURE_BURST
    )
    with running_server(settings, in_process_workers=False) as running:
        yield running


def test_a_client_guessing_keys_over_rest_is_refused_as_rate_limited_after_the_burst(
    server: ServerThread,
) -> None:
    with (
        running_rest(f"127.0.0.1:{server.port}") as rest,
        httpx.Client(base_url=rest.url, timeout=15) as client,
    ):
        guesses = [client.get(AGENTS, headers={"X-API-Key": UNKNOWN_KEY}) for _ in range(25)]
        statuses = [response.status_code for response in guesses]
        assert statuses == [401] * FAILURE_BURST + [429] * (25 - FAILURE_BURST)
        refused = guesses[-1]
        assert refused.json()["error"] == {
            "code": "RATE_LIMITED",
            "message": TOO_MANY_FAILURES,
            "status": 429,
        }
        assert int(refused.headers["Retry-After"]) >= 1
        # The address is refused whatever it sends until its bucket refills.
        valid = client.get(AGENTS, headers={"Authorization": f"Bearer {token()}"})
        assert valid.status_code == 429


def test_a_client_sending_bad_tokens_over_grpc_is_refused_after_the_burst(
    server: ServerThread,
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = agents_grpc.AgentServiceStub(channel)
        codes = []
        for _ in range(FAILURE_BURST + 3):
            with pytest.raises(grpc.RpcError) as failed:
                stub.ListAgents(
                    agents_pb.ListAgentsRequest(),
                    metadata=(("authorization", "Bearer not-a-token"),),
                    timeout=10,
                )
            codes.append(failed.value.code())
        assert (
            codes
            == [grpc.StatusCode.UNAUTHENTICATED] * FAILURE_BURST
            + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
        )
        assert failed.value.details() == TOO_MANY_FAILURES


def test_a_spoofed_client_address_is_not_believed_from_the_rest_client(
    server: ServerThread,
) -> None:
    # A client naming other addresses over REST still fails as itself: the shim drops
    # the header it sent and names the connection's address instead.
    with (
        running_rest(f"127.0.0.1:{server.port}") as rest,
        httpx.Client(base_url=rest.url, timeout=15) as client,
    ):
        statuses = [
            client.get(
                AGENTS,
                headers={"X-API-Key": UNKNOWN_KEY, "X-Agentq-Client-Address": f"10.0.0.{n}"},
            ).status_code
            for n in range(FAILURE_BURST + 2)
        ]
    assert statuses[-1] == 429
