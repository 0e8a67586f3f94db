"""The shim's hot lane answers exactly as its FastAPI routes do, byte for byte.

The lane (rest_shim/hot_routes.py) takes requests with a canonical lowercase id; the
same request with the id in upper case goes through FastAPI. Both are sent here to one
app in front of a canned gRPC server, and must make the same call and get the same
answer. Errors the shim decides itself are FastAPI's, whichever way the request came in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import job_pb2
from agentq.v1 import job_service_pb2 as jobs_pb
from rest_shim import hot_routes
from rest_shim.app import create_app
from rest_shim.settings import RestSettings

JOB_ID = "8c6f3f0e-6a53-4f39-9a0d-3b1f0c7a9d11"
MISSING_JOB_ID = "0000000a-0000-4000-8000-00000000000b"
AGENT_ID = "2f1e7a52-1c4b-4c59-8a57-0c1d5b7e3a90"
TRAILERS = (("x-ratelimit-limit", "10"), ("x-ratelimit-remaining", "9"), ("x-ratelimit-reset", "7"))
HEADERS = {"Authorization": "Bearer a.b.c", "X-Request-ID": "req-1"}


def _job(job_id: str) -> job_pb2.Job:
    job = job_pb2.Job(job_id=job_id, agent_id=AGENT_ID, status=job_pb2.JOB_STATUS_FAILED)
    job.error = "provider said \u00e9\u2028\x01"
    job.queued_at.FromJsonString("2025-01-01T00:00:00.5Z")
    job.completed_at.FromJsonString("2025-01-01T00:00:01.123456Z")
    job.result.success = False
    job.result.tokens_used = 42
    job.result.confidence = float("nan")
    return job


class Jobs:
    """GetJob: a failed job, or NOT_FOUND with agentq's ErrorInfo."""

    async def GetJob(
        self, request: jobs_pb.GetJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> jobs_pb.GetJobResponse:
        if request.job_id == MISSING_JOB_ID:
            status = status_pb2.Status(code=code_pb2.NOT_FOUND, message="Job not found")
            info = error_details_pb2.ErrorInfo(reason="NOT_FOUND", domain="agentq")
            status.details.add().Pack(info)
            await context.abort_with_status(rpc_status.to_status(status))
        context.set_trailing_metadata(TRAILERS)
        return jobs_pb.GetJobResponse(job=_job(request.job_id))


class Agents:
    """Execute: acknowledges, and keeps each request and its metadata."""

    def __init__(self) -> None:
        self.received: list[tuple[agents_pb.ExecuteRequest, list[tuple[str, str | bytes]]]] = []

    async def GetAgent(
        self, request: agents_pb.GetAgentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agents_pb.GetAgentResponse:
        context.set_trailing_metadata(TRAILERS)
        reply = agents_pb.GetAgentResponse()
        reply.agent.id = request.agent_id
        reply.agent.name = "helper"
        reply.agent.fitness = 0.1  # a float32 on the wire: 0.10000000149011612 back
        reply.agent.created_at.FromJsonString("2025-01-01T00:00:00Z")
        return reply

    async def Execute(
        self, request: agents_pb.ExecuteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agents_pb.ExecuteResponse:
        metadata = [(key, value) for key, value in context.invocation_metadata() or ()]
        self.received.append((request, sorted(m for m in metadata if m[0] != "user-agent")))
        context.set_trailing_metadata(TRAILERS)
        return agents_pb.ExecuteResponse(
            agent_id=request.agent_id,
            job_id=JOB_ID,
            status=job_pb2.JOB_STATUS_PENDING,
            response=f"Job queued: {JOB_ID}",
            confidence=1.0,
            context_hash="pending",
            latency_ms=3,
        )


def _handlers(agents: Agents, jobs: Jobs) -> tuple[grpc.GenericRpcHandler, ...]:
    # Registered by hand: the generated servicer bases would want every RPC.
    execute = grpc.unary_unary_rpc_method_handler(
        agents.Execute,
        request_deserializer=agents_pb.ExecuteRequest.FromString,
        response_serializer=agents_pb.ExecuteResponse.SerializeToString,
    )
    get_agent = grpc.unary_unary_rpc_method_handler(
        agents.GetAgent,
        request_deserializer=agents_pb.GetAgentRequest.FromString,
        response_serializer=agents_pb.GetAgentResponse.SerializeToString,
    )
    get_job = grpc.unary_unary_rpc_method_handler(
        jobs.GetJob,
        request_deserializer=jobs_pb.GetJobRequest.FromString,
        response_serializer=jobs_pb.GetJobResponse.SerializeToString,
    )
    return (
        grpc.method_handlers_generic_handler(
            "agentq.v1.AgentService", {"Execute": execute, "GetAgent": get_agent}
        ),
        grpc.method_handlers_generic_handler("agentq.v1.JobService", {"GetJob": get_job}),
    )


Scenario = Callable[[httpx.AsyncClient, Agents], Awaitable[None]]


def _run(scenario: Scenario) -> None:
    """Run `scenario` with a client of the shim app in front of the canned server."""

    async def main() -> None:
        server = grpc.aio.server()
        agents = Agents()
        server.add_generic_rpc_handlers(_handlers(agents, Jobs()))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        app = create_app(RestSettings(grpc_target=f"127.0.0.1:{port}"))
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://shim") as client:
                    await scenario(client, agents)
        finally:
            await server.stop(grace=None)

    asyncio.run(main())


@pytest.fixture
def lane_answers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the hot lane answered itself."""
    answered: list[str] = []
    answer = hot_routes._answer

    async def counted(scope: Any, *args: Any) -> Any:
        answered.append(scope["path"])
        return await answer(scope, *args)

    monkeypatch.setattr(hot_routes, "_answer", counted)
    return answered


def _same(lane: httpx.Response, routed: httpx.Response) -> None:
    assert lane.status_code == routed.status_code
    assert lane.headers.raw == routed.headers.raw
    assert lane.content == routed.content


async def _read_both_ways(client: httpx.AsyncClient, collection: str, id_: str) -> httpx.Response:
    """Read /api/v1/{collection}/{id_} through the lane (the canonical lower-case id) and
    through FastAPI (the same id in upper case, which the lane leaves to it); both answers
    must be the same bytes. The lane's answer."""
    lane = await client.get(f"/api/v1/{collection}/{id_}", headers=HEADERS)
    routed = await client.get(f"/api/v1/{collection}/{id_.upper()}", headers=HEADERS)
    _same(lane, routed)
    return lane


def test_a_job_read_by_the_lane_is_the_same_bytes_as_through_fastapi(
    lane_answers: list[str],
) -> None:
    async def scenario(client: httpx.AsyncClient, agents: Agents) -> None:
        lane = await _read_both_ways(client, "jobs", JOB_ID)
        assert lane.status_code == 200
        assert lane.headers["x-ratelimit-remaining"] == "9"
        assert lane.headers["x-request-id"] == "req-1"
        body = lane.json()
        assert body["error"] == "provider said \u00e9\u2028\x01"
        assert body["result"]["confidence"] is None  # NaN, as FastAPI wrote it

    _run(scenario)
    assert lane_answers == [f"/api/v1/jobs/{JOB_ID}"]


def test_an_agent_read_by_the_lane_is_the_same_bytes_as_through_fastapi(
    lane_answers: list[str],
) -> None:
    async def scenario(client: httpx.AsyncClient, agents: Agents) -> None:
        lane = await _read_both_ways(client, "agents", AGENT_ID)
        assert lane.status_code == 200
        assert lane.json()["id"] == AGENT_ID

    _run(scenario)
    assert lane_answers == [f"/api/v1/agents/{AGENT_ID}"]


def test_a_missing_job_is_the_same_404_by_either_way(lane_answers: list[str]) -> None:
    async def scenario(client: httpx.AsyncClient, agents: Agents) -> None:
        lane = await _read_both_ways(client, "jobs", MISSING_JOB_ID)
        assert lane.status_code == 404
        assert lane.json()["error"] == {
            "code": "NOT_FOUND",
            "message": "Job not found",
            "status": 404,
        }

    _run(scenario)
    assert lane_answers == [f"/api/v1/jobs/{MISSING_JOB_ID}"]


def test_an_execution_by_the_lane_sends_the_same_call_and_answers_the_same(
    lane_answers: list[str],
) -> None:
    body = {
        "prompt": "say hello",
        "context_id": "ctx",
        "enable_adversarial": True,
        "max_debate_rounds": 10**30,
        "request_id": "from-body",
        "ignored": 1,
    }
    headers = [
        *((name.encode(), value.encode()) for name, value in HEADERS.items()),
        (b"Idempotency-Key", b"key-1"),
        (b"X-API-Key", "agq_\u00e9".encode()),
    ]

    async def scenario(client: httpx.AsyncClient, agents: Agents) -> None:
        lane = await client.post(f"/api/v1/agents/{AGENT_ID}/execute", json=body, headers=headers)
        routed = await client.post(
            f"/api/v1/agents/{AGENT_ID.upper()}/execute", json=body, headers=headers
        )
        _same(lane, routed)
        assert lane.status_code == 202
        assert lane.json()["job_id"] == JOB_ID
        [(lane_call, lane_metadata), (routed_call, routed_metadata)] = agents.received
        assert lane_call == routed_call
        assert lane_call.request_id == "key-1"
        assert lane_call.max_debate_rounds == 2**31 - 1
        assert lane_metadata == routed_metadata
        assert ("x-api-key", "agq_??") in lane_metadata

    _run(scenario)
    assert lane_answers == [f"/api/v1/agents/{AGENT_ID}/execute"]


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b'{"prompt": 1}', "application/json", 422, "VALIDATION_ERROR"),
        (b'{"prompt": "x"', "application/json", 400, "BAD_REQUEST"),
        (b"[]", "application/json", 400, "BAD_REQUEST"),
        (b'{"prompt": "x"}', "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
    ],
)
def test_a_body_the_lane_cannot_take_gets_fastapis_error(
    lane_answers: list[str], content: bytes, content_type: str, status: int, code: str
) -> None:
    async def scenario(client: httpx.AsyncClient, agents: Agents) -> None:
        response = await client.post(
            f"/api/v1/agents/{AGENT_ID}/execute",
            content=content,
            headers={**HEADERS, "Content-Type": content_type},
        )
        assert response.status_code == status
        assert response.json()["error"]["code"] == code
        assert response.headers["x-request-id"] == "req-1"
        assert agents.received == []

    _run(scenario)
    assert lane_answers == []


def test_a_body_sent_in_chunks_reaches_the_server_whole(lane_answers: list[str]) -> None:
    async def chunks() -> Any:
        for part in (b'{"prompt":', b' "in two parts"}'):
            yield part

    async def scenario(client: httpx.AsyncClient, agents: Agents) -> None:
        response = await client.post(
            f"/api/v1/agents/{AGENT_ID}/execute",
            content=chunks(),
            headers={**HEADERS, "Content-Type": "application/json"},
        )
        assert response.status_code == 202
        assert agents.received[0][0].prompt == "in two parts"

    _run(scenario)
    assert lane_answers == [f"/api/v1/agents/{AGENT_ID}/execute"]
