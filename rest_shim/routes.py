"""The routes of contract §3: parse the JSON, make one RPC, render the reply."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPBearer

from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import job_service_pb2 as jobs_pb
from agentq.v1 import system_service_pb2 as system_pb
from rest_shim import render
from rest_shim.backend import Backend
from rest_shim.schemas import (
    AgentOut,
    CreateAgentBody,
    ErrorBody,
    ExecuteAck,
    ExecuteBody,
    HealthOut,
    JobOut,
)

# Documents the bearer scheme; the token itself is checked by the gRPC server only.
bearer = HTTPBearer(auto_error=False, description="An HS256 JWT (contract §1).")
_SECURED = [Depends(bearer)]
_INT32_MAX = 2**31 - 1


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


_AUTHED = (401, 403, 503, 504)
_BODY = (400, 413, 415, 422)

router = APIRouter()


async def _call(request: Request, method: Any, message: Any) -> Any:
    backend: Backend = request.app.state.backend
    return await backend.call(
        method,
        message,
        authorization=request.headers.get("authorization"),
        request_id=request.state.request_id,
    )


def _int32(value: int) -> int:
    # JSON integers are unbounded, proto's are not; every rule the server
    # checks lies well inside int32, so clamping keeps the server's message.
    return max(-_INT32_MAX - 1, min(_INT32_MAX, value))


@router.get("/health", response_model=HealthOut, responses=_errors(503, 504), tags=["system"])
async def get_health(request: Request) -> dict[str, Any]:
    """The service's health; public."""
    backend: Backend = request.app.state.backend
    reply = await _call(request, backend.system.GetHealth, system_pb.GetHealthRequest())
    return render.health(reply)


@router.post(
    "/api/v1/agents",
    status_code=201,
    response_model=AgentOut,
    responses=_errors(*_AUTHED, *_BODY),
    dependencies=_SECURED,
    tags=["agents"],
)
async def create_agent(
    body: CreateAgentBody,
    request: Request,
) -> dict[str, Any]:
    """Create an agent (role `user` or `admin`)."""
    message = agents_pb.CreateAgentRequest(
        name=body.name,
        role=body.role,
        max_depth=_int32(body.max_depth),
        spawn_shadow=body.spawn_shadow,
    )
    reply = await _call(request, request.app.state.backend.agents.CreateAgent, message)
    return render.agent(reply.agent)


@router.get(
    "/api/v1/agents/{agent_id}",
    response_model=AgentOut,
    responses=_errors(*_AUTHED, 404, 422),
    dependencies=_SECURED,
    tags=["agents"],
)
async def get_agent(
    agent_id: uuid.UUID,
    request: Request,
) -> dict[str, Any]:
    """Read an agent; another tenant's agent is a 404."""
    message = agents_pb.GetAgentRequest(agent_id=str(agent_id))
    reply = await _call(request, request.app.state.backend.agents.GetAgent, message)
    return render.agent(reply.agent)


@router.post(
    "/api/v1/agents/{agent_id}/execute",
    status_code=202,
    response_model=ExecuteAck,
    responses=_errors(*_AUTHED, *_BODY, 404),
    dependencies=_SECURED,
    tags=["agents"],
)
async def execute(
    agent_id: uuid.UUID,
    body: ExecuteBody,
    request: Request,
) -> dict[str, Any]:
    """Queue an execution; poll the job named in `job_id` (also in `response`)."""
    message = agents_pb.ExecuteRequest(
        agent_id=str(agent_id),
        prompt=body.prompt,
        context_id=body.context_id,
        enable_adversarial=body.enable_adversarial,
        enable_self_correction=body.enable_self_correction,
        max_debate_rounds=_int32(body.max_debate_rounds),
    )
    reply = await _call(request, request.app.state.backend.agents.Execute, message)
    return render.execute_ack(reply)


@router.get(
    "/api/v1/jobs/{job_id}",
    response_model=JobOut,
    responses=_errors(*_AUTHED, 404, 422),
    dependencies=_SECURED,
    tags=["jobs"],
)
async def get_job(
    job_id: uuid.UUID,
    request: Request,
) -> dict[str, Any]:
    """Read a job and, once it has finished, its result."""
    message = jobs_pb.GetJobRequest(job_id=str(job_id))
    reply = await _call(request, request.app.state.backend.jobs.GetJob, message)
    return render.job(reply.job)
