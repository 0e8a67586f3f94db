"""Retries against a real server: a lost reply does not queue a second job, and a rate limit
is waited out as the server's RetryInfo says."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from agentq.client import Client, DeadlineExceeded, RateLimited, RetryPolicy, Unavailable
from agentq.client.policy import NO_RETRIES
from agentq.v1 import agent_service_pb2 as agents_pb
from tests.client.conftest import sqlite_server
from tests.e2e.harness import token

EXECUTE = "/agentq.v1.AgentService/Execute"


class LoseFirstExecuteReply(aio.UnaryUnaryClientInterceptor):
    """Sends every call to the server, but drops the reply of the first Execute."""

    def __init__(self) -> None:
        self.executes: list[agents_pb.ExecuteRequest] = []

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        call = await continuation(client_call_details, request)
        if _method(client_call_details) == EXECUTE:
            self.executes.append(request)
            if len(self.executes) == 1:
                await call  # the server has stored the job
                # What a client sees when the connection drops after the server took it.
                raise aio.AioRpcError(
                    grpc.StatusCode.UNAVAILABLE,
                    aio.Metadata(),
                    aio.Metadata(),
                    details="Connection reset by peer",
                )
        return call


def _method(details: Any) -> str:
    # grpc.aio hands interceptors the method name as bytes.
    method = details.method
    return method.decode() if isinstance(method, bytes) else str(method)


def test_a_retried_execute_keeps_its_request_id_and_queues_one_job(url: str) -> None:
    interceptor = LoseFirstExecuteReply()
    bearer = token("alice", tenant="lost-reply")
    with Client(url, token=bearer, interceptors=[interceptor]) as client:
        agent = client.agents.create(name="echo", role="You answer briefly.")

        handle = client.execute(agent.id, "Hello")
        jobs = list(client.jobs.list(agent_id=agent.id))

    assert len(interceptor.executes) == 2
    first, second = (request.request_id for request in interceptor.executes)
    assert first == second and len(first) == 36
    assert [job.id for job in jobs] == [handle.id]


def test_a_second_logical_execute_gets_a_request_id_of_its_own(client: Client) -> None:
    agent = client.agents.create(name="echo", role="You answer briefly.")

    ids = {client.execute(agent.id, "Hello").id for _ in range(2)}

    assert len(ids) == 2


def test_rate_limited_calls_wait_for_the_retry_delay_the_server_names(tmp_path: Path) -> None:
    tiers = {"tiny": {"rate": 1, "burst": 1}}
    server = sqlite_server(tmp_path, rate_tiers=tiers, default_tier="tiny")
    url = f"127.0.0.1:{server.port}"
    try:
        with Client(url, token=token("alice"), retry=NO_RETRIES) as impatient:
            list(impatient.agents.list())
            with pytest.raises(RateLimited) as raised:
                list(impatient.agents.list())
        with Client(url, token=token("bob"), retry=RetryPolicy(initial_backoff_s=0.01)) as patient:
            started = time.monotonic()
            for _ in range(3):
                list(patient.agents.list())
            took = time.monotonic() - started
    finally:
        server.stop()

    assert raised.value.message == "Too many requests"
    assert raised.value.retry_after == 1.0
    assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # One call spends the burst; each of the next two waits the second RetryInfo names.
    assert 1.8 < took < 10


def test_a_deadline_ends_the_retries_of_an_unreachable_server() -> None:
    with Client("127.0.0.1:1", token=token("alice")) as client:
        started = time.monotonic()
        with pytest.raises((Unavailable, DeadlineExceeded)):
            list(client.agents.list(timeout=1.5))
        took = time.monotonic() - started

    # It stops retrying rather than sleep past the deadline.
    assert took < 2
