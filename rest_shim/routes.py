"""The routes of docs/contract.md §3: parse the JSON, make one RPC, render the reply."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.security import APIKeyHeader, HTTPBearer

from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import job_pb2
from agentq.v1 import job_service_pb2 as jobs_pb
from agentq.v1 import system_service_pb2 as system_pb
from rest_shim import render, stream
from rest_shim.backend import Backend
from rest_shim.errors import rate_headers
from rest_shim.schemas import (
    AgentOut,
    AgentPage,
    CreateAgentBody,
    ErrorBody,
    ExecuteAck,
    ExecuteBody,
    HealthOut,
    JobOut,
    JobPage,
    JobStatusName,
)

# Documents the credentials (docs/contract.md §1); the gRPC server alone checks them.
bearer = HTTPBearer(auto_error=False, description="An HS256 JWT, or an `agq_` API key.")
api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An `agq_` API key.")
_SECURED = [Depends(bearer), Depends(api_key)]
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


_AUTHED = (401, 403, 429, 503, 504)
_BODY = (400, 413, 415, 422)

router = APIRouter()


async def call(request: Request, method: Any, message: Any) -> Any:
    """Make one RPC for this request; its rate-limit trailers become response headers."""
    backend: Backend = request.app.state.backend
    reply, trailers = await backend.call(
        method, message, headers=request.headers, request_id=request.state.request_id
    )
    request.state.rate_headers = rate_headers(trailers)
    return reply


def execute_request(
    agent_id: str, body: ExecuteBody, idempotency_key: str | None
) -> agents_pb.ExecuteRequest:
    """The Execute message of a request; an `Idempotency-Key` header wins over `request_id`."""
    return agents_pb.ExecuteRequest(
        agent_id=agent_id,
        prompt=body.prompt,
        context_id=body.context_id,
        enable_adversarial=body.enable_adversarial,
        enable_self_correction=body.enable_self_correction,
        max_debate_rounds=int32(body.max_debate_rounds),
        request_id=idempotency_key if idempotency_key is not None else body.request_id,
        parent_job_id=body.parent_job_id,
    )


def int32(value: int) -> int:
    # JSON integers are unbounded, proto's are not; every rule the server
    # checks lies well inside int32, so clamping keeps the server's message.
    return max(-_INT32_MAX - 1, min(_INT32_MAX, value))


def int64(value: int) -> int:
    """`value` clamped to the int64 range of proto's 64-bit fields."""
    return max(-_INT64_MAX - 1, min(_INT64_MAX, value))


@router.get("/health", response_model=HealthOut, responses=errors(503, 504), tags=["system"])
async def get_health(request: Request) -> Response:
    """The service's health; public."""
    backend: Backend = request.app.state.backend
    reply = await call(request, backend.system.GetHealth, system_pb.GetHealthRequest())
    return render.json_response(render.health(reply))


@router.post(
    "/api/v1/agents",
    status_code=201,
    response_model=AgentOut,
    responses=errors(*_AUTHED, *_BODY),
    dependencies=_SECURED,
    tags=["agents"],
)
async def create_agent(
    body: CreateAgentBody,
    request: Request,
) -> Response:
    """Create an agent (role `user` or `admin`)."""
    message = agents_pb.CreateAgentRequest(
        name=body.name,
        role=body.role,
        max_depth=int32(body.max_depth),
        spawn_shadow=body.spawn_shadow,
    )
    reply = await call(request, request.app.state.backend.agents.CreateAgent, message)
    return render.json_response(render.agent(reply.agent), 201)


@router.get(
    "/api/v1/agents/{agent_id}",
    response_model=AgentOut,
    responses=errors(*_AUTHED, 404, 422),
    dependencies=_SECURED,
    tags=["agents"],
)
async def get_agent(
    agent_id: uuid.UUID,
    request: Request,
) -> Response:
    """Read an agent; another tenant's agent is a 404."""
    message = agents_pb.GetAgentRequest(agent_id=str(agent_id))
    reply = await call(request, request.app.state.backend.agents.GetAgent, message)
    return render.json_response(render.agent(reply.agent))


@router.post(
    "/api/v1/agents/{agent_id}/execute",
    status_code=202,
    response_model=ExecuteAck,
    responses=errors(*_AUTHED, *_BODY, 404, 409),
    dependencies=_SECURED,
    tags=["agents"],
)
async def execute(
    agent_id: uuid.UUID,
    body: ExecuteBody,
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(description="Retrying with the same key and body returns the original job."),
    ] = None,
) -> Response:
    """Queue an execution; poll the job named in `job_id` (also in `response`)."""
    message = execute_request(str(agent_id), body, idempotency_key)
    reply = await call(request, request.app.state.backend.agents.Execute, message)
    return render.json_response(render.execute_ack(reply), 202)


@router.get(
    "/api/v1/jobs/{job_id}",
    response_model=JobOut,
    responses=errors(*_AUTHED, 404, 422),
    dependencies=_SECURED,
    tags=["jobs"],
)
async def get_job(
    job_id: uuid.UUID,
    request: Request,
) -> Response:
    """Read a job and, once it has finished, its result."""
    message = jobs_pb.GetJobRequest(job_id=str(job_id))
    reply = await call(request, request.app.state.backend.jobs.GetJob, message)
    return render.json_response(render.job(reply.job))


_STATUS_VALUES = {
    "pending": job_pb2.JOB_STATUS_PENDING,
    "running": job_pb2.JOB_STATUS_RUNNING,
    "completed": job_pb2.JOB_STATUS_COMPLETED,
    "failed": job_pb2.JOB_STATUS_FAILED,
    "cancelled": job_pb2.JOB_STATUS_CANCELLED,
}
PageSize = Annotated[int | None, Query(description="1-100; 20 when omitted.")]
PageToken = Annotated[str, Query(description="The previous page's next_page_token.")]


@router.get(
    "/api/v1/agents",
    response_model=AgentPage,
    responses=errors(*_AUTHED, 422),
    dependencies=_SECURED,
    tags=["agents"],
)
async def list_agents(
    request: Request, page_size: PageSize = None, page_token: PageToken = ""
) -> Response:
    """List the caller's agents, newest first."""
    size = None if page_size is None else int32(page_size)
    message = agents_pb.ListAgentsRequest(page_size=size, page_token=page_token)
    reply = await call(request, request.app.state.backend.agents.ListAgents, message)
    items = [render.agent(a) for a in reply.agents]
    return render.json_response(render.page(items, reply.page_size, reply.next_page_token))


@router.delete(
    "/api/v1/agents/{agent_id}",
    status_code=204,
    response_class=Response,
    responses=errors(*_AUTHED, 404, 422),
    dependencies=_SECURED,
    tags=["agents"],
)
async def delete_agent(agent_id: uuid.UUID, request: Request) -> Response:
    """Delete an agent; its unfinished jobs are cancelled, finished ones stay readable."""
    message = agents_pb.DeleteAgentRequest(agent_id=str(agent_id))
    await call(request, request.app.state.backend.agents.DeleteAgent, message)
    return Response(status_code=204)


@router.get(
    "/api/v1/jobs",
    response_model=JobPage,
    responses=errors(*_AUTHED, 422),
    dependencies=_SECURED,
    tags=["jobs"],
)
async def list_jobs(
    request: Request,
    agent_id: uuid.UUID | None = None,
    status: JobStatusName | None = None,
    page_size: PageSize = None,
    page_token: PageToken = "",
) -> Response:
    """List the caller's jobs, newest first, optionally one agent's or one status's."""
    message = jobs_pb.ListJobsRequest(
        page_size=None if page_size is None else int32(page_size),
        page_token=page_token,
        agent_id=None if agent_id is None else str(agent_id),
        status=None if status is None else _STATUS_VALUES[status],
    )
    reply = await call(request, request.app.state.backend.jobs.ListJobs, message)
    items = [render.job(j) for j in reply.jobs]
    return render.json_response(render.page(items, reply.page_size, reply.next_page_token))


@router.post(
    "/api/v1/jobs/{job_id}/cancel",
    response_model=JobOut,
    responses=errors(*_AUTHED, 404, 409, 422),
    dependencies=_SECURED,
    tags=["jobs"],
)
async def cancel_job(job_id: uuid.UUID, request: Request) -> Response:
    """Cancel a job (and its unfinished sub-agent jobs); 409 if it already finished."""
    message = jobs_pb.CancelJobRequest(job_id=str(job_id))
    reply = await call(request, request.app.state.backend.jobs.CancelJob, message)
    return render.json_response(render.job(reply.job))


@router.get(
    "/api/v1/jobs/{job_id}/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events."},
        **errors(*_AUTHED, 404, 422),
    },
    dependencies=_SECURED,
    tags=["jobs"],
)
async def stream_job(
    job_id: uuid.UUID,
    request: Request,
    last_event_id: Annotated[
        int | None, Header(description="Resume after this event's sequence number.")
    ] = None,
) -> StreamingResponse:
    """The job's events as SSE (`id:` is the sequence); resumes after `Last-Event-ID`."""
    backend: Backend = request.app.state.backend
    after = int64(max(0, last_event_id or 0))
    message = jobs_pb.WatchJobRequest(job_id=str(job_id), after_sequence=after)
    watch = backend.watch(message, headers=request.headers, request_id=request.state.request_id)
    if not await stream.opened(watch):
        await stream.raise_refusal(watch)  # 401, 404, ...; returns if the stream just ended
    keepalive_s = request.app.state.stream_keepalive_s
    return StreamingResponse(
        stream.events(watch, keepalive_s=keepalive_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
