"""The routes of docs/contract.md §3: parse the JSON, make one RPC, render the reply.

Each function builds the request message of its route's RPC; its declaration in
`API` (table.py) says the rest. FastAPI serves every route; the fast lane also serves
the routes declared `fast` (a job poll, an execution, an agent read), so for those
FastAPI answers only what the lane hands over: a non-canonical id, and every error the
shim decides itself.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Header, Path, Query
from fastapi.responses import Response, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPBearer

from agentq.v1 import agent_pb2, job_pb2
from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import context_service_pb2 as contexts_pb
from agentq.v1 import job_service_pb2 as jobs_pb
from agentq.v1 import system_service_pb2 as system_pb
from rest_shim import render, rules, stream
from rest_shim.rules import documented
from rest_shim.schemas import (
    AgentOut,
    AgentPage,
    ContextPage,
    CreateAgentBody,
    ExecuteAck,
    ExecuteBody,
    HealthOut,
    JobOut,
    JobPage,
    JobStatusName,
    VerificationPromptsBody,
)
from rest_shim.table import RouteTable

# Documents the credentials (docs/contract.md §1); the gRPC server alone checks them.
bearer = HTTPBearer(auto_error=False, description="An HS256 JWT, or an `agq_` API key.")
api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An `agq_` API key.")
_SECURED = (Depends(bearer), Depends(api_key))
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1

# 431: credential headers over their size limit (credential_size.py), on any route.
_AUTHED = (401, 403, 429, 431, 503, 504)
_BODY = (400, 413, 415, 422)

API = RouteTable()


def int32(value: int) -> int:
    # JSON integers are unbounded, proto's are not; every rule the server
    # checks lies well inside int32, so clamping keeps the server's message.
    return max(-_INT32_MAX - 1, min(_INT32_MAX, value))


def int64(value: int) -> int:
    """`value` clamped to the int64 range of proto's 64-bit fields."""
    return max(-_INT64_MAX - 1, min(_INT64_MAX, value))


@API.route(
    "GET",
    "/health",
    rpc="SystemService.GetHealth",
    render=render.health,
    response_model=HealthOut,
    errors=(431, 503, 504),
    tag="system",
)
def get_health() -> system_pb.GetHealthRequest:
    """The service's health; public."""
    return system_pb.GetHealthRequest()


@API.route(
    "POST",
    "/api/v1/agents",
    rpc="AgentService.CreateAgent",
    status=201,
    render=lambda reply: render.agent(reply.agent),
    response_model=AgentOut,
    errors=(*_AUTHED, *_BODY),
    credentials=_SECURED,
    tag="agents",
)
def create_agent(body: CreateAgentBody) -> agents_pb.CreateAgentRequest:
    """Create an agent (role `user` or `admin`)."""
    return agents_pb.CreateAgentRequest(
        name=body.name,
        role=body.role,
        max_depth=int32(body.max_depth),
        spawn_shadow=body.spawn_shadow,
        verification=_verification(body.verification),
    )


def _verification(body: VerificationPromptsBody | None) -> agent_pb2.VerificationPrompts | None:
    """The prompts the body sets (null ones are left unset: the server's stay)."""
    if body is None:
        return None
    return agent_pb2.VerificationPrompts(**body.model_dump(exclude_none=True))


@API.route(
    "GET",
    "/api/v1/agents/{agent_id}",
    rpc="AgentService.GetAgent",
    render=lambda reply: render.agent(reply.agent),
    response_model=AgentOut,
    errors=(*_AUTHED, 404, 422),
    credentials=_SECURED,
    tag="agents",
    fast=True,
)
def get_agent(agent_id: uuid.UUID) -> agents_pb.GetAgentRequest:
    """Read an agent; another tenant's agent is a 404."""
    return agents_pb.GetAgentRequest(agent_id=str(agent_id))


@API.route(
    "POST",
    "/api/v1/agents/{agent_id}/execute",
    rpc="AgentService.Execute",
    status=202,
    render=render.execute_ack,
    response_model=ExecuteAck,
    errors=(*_AUTHED, *_BODY, 404, 409),
    credentials=_SECURED,
    tag="agents",
    fast=True,
    header_fields={"request_id": "idempotency_key"},
)
def execute(
    agent_id: uuid.UUID,
    body: ExecuteBody,
    idempotency_key: Annotated[
        str | None,
        documented(rules.request_key()),
        Header(description="Retrying with the same key and body returns the original job."),
    ] = None,
) -> agents_pb.ExecuteRequest:
    """Queue an execution; poll the job named in `job_id` (also in `response`)."""
    return agents_pb.ExecuteRequest(
        agent_id=str(agent_id),
        prompt=body.prompt,
        context_id=body.context_id,
        enable_adversarial=body.enable_adversarial,
        enable_self_correction=body.enable_self_correction,
        max_debate_rounds=int32(body.max_debate_rounds),
        # The `Idempotency-Key` header wins over the body's `request_id`.
        request_id=idempotency_key if idempotency_key is not None else body.request_id,
        parent_job_id=body.parent_job_id,
    )


@API.route(
    "GET",
    "/api/v1/jobs/{job_id}",
    rpc="JobService.GetJob",
    render=lambda reply: render.job(reply.job),
    response_model=JobOut,
    errors=(*_AUTHED, 404, 422),
    credentials=_SECURED,
    tag="jobs",
    fast=True,
)
def get_job(job_id: uuid.UUID) -> jobs_pb.GetJobRequest:
    """Read a job and, once it has finished, its result."""
    return jobs_pb.GetJobRequest(job_id=str(job_id))


_STATUS_VALUES = {
    "pending": job_pb2.JOB_STATUS_PENDING,
    "running": job_pb2.JOB_STATUS_RUNNING,
    "completed": job_pb2.JOB_STATUS_COMPLETED,
    "failed": job_pb2.JOB_STATUS_FAILED,
    "cancelled": job_pb2.JOB_STATUS_CANCELLED,
}
PageSize = Annotated[
    int | None,
    documented(rules.integer(1, rules.MAX_PAGE_SIZE)),
    Query(description="1-100; 20 when omitted."),
]
PageToken = Annotated[str, Query(description="The previous page's next_page_token.")]


@API.route(
    "GET",
    "/api/v1/agents",
    rpc="AgentService.ListAgents",
    render=render.agent_page,
    response_model=AgentPage,
    errors=(*_AUTHED, 422),
    credentials=_SECURED,
    tag="agents",
)
def list_agents(
    page_size: PageSize = None, page_token: PageToken = ""
) -> agents_pb.ListAgentsRequest:
    """List the caller's agents, newest first."""
    size = None if page_size is None else int32(page_size)
    return agents_pb.ListAgentsRequest(page_size=size, page_token=page_token)


@API.route(
    "DELETE",
    "/api/v1/agents/{agent_id}",
    rpc="AgentService.DeleteAgent",
    status=204,
    render=None,
    response_class=Response,
    errors=(*_AUTHED, 404, 422),
    credentials=_SECURED,
    tag="agents",
)
def delete_agent(agent_id: uuid.UUID) -> agents_pb.DeleteAgentRequest:
    """Delete an agent; its unfinished jobs are cancelled, finished ones stay readable."""
    return agents_pb.DeleteAgentRequest(agent_id=str(agent_id))


@API.route(
    "GET",
    "/api/v1/jobs",
    rpc="JobService.ListJobs",
    render=render.job_page,
    response_model=JobPage,
    errors=(*_AUTHED, 422),
    credentials=_SECURED,
    tag="jobs",
)
def list_jobs(
    agent_id: uuid.UUID | None = None,
    status: JobStatusName | None = None,
    page_size: PageSize = None,
    page_token: PageToken = "",
) -> jobs_pb.ListJobsRequest:
    """List the caller's jobs, newest first, optionally one agent's or one status's."""
    return jobs_pb.ListJobsRequest(
        page_size=None if page_size is None else int32(page_size),
        page_token=page_token,
        agent_id=None if agent_id is None else str(agent_id),
        status=None if status is None else _STATUS_VALUES[status],
    )


@API.route(
    "POST",
    "/api/v1/jobs/{job_id}/cancel",
    rpc="JobService.CancelJob",
    render=lambda reply: render.job(reply.job),
    response_model=JobOut,
    errors=(*_AUTHED, 404, 409, 422),
    credentials=_SECURED,
    tag="jobs",
)
def cancel_job(job_id: uuid.UUID) -> jobs_pb.CancelJobRequest:
    """Cancel a job (and its unfinished sub-agent jobs); 409 if it already finished."""
    return jobs_pb.CancelJobRequest(job_id=str(job_id))


@API.route(
    "GET",
    "/api/v1/jobs/{job_id}/stream",
    rpc="JobService.WatchJob",
    render=None,
    respond=stream.respond,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events."}},
    errors=(*_AUTHED, 404, 422),
    credentials=_SECURED,
    tag="jobs",
)
def stream_job(
    job_id: uuid.UUID,
    # A header is sent or not, never null: documented as a plain integer.
    last_event_id: Annotated[
        int | None,
        documented(rules.integer()),
        Header(description="Resume after this event's sequence number."),
    ] = None,
) -> jobs_pb.WatchJobRequest:
    """The job's events as SSE (`id:` is the sequence); resumes after `Last-Event-ID`."""
    after = int64(max(0, last_event_id or 0))
    return jobs_pb.WatchJobRequest(job_id=str(job_id), after_sequence=after)


# A context's name is the client's, any string of the rule; the server judges it (422).
ContextId = Annotated[
    str, documented(rules.context_id()), Path(description="1-128 characters of A-Za-z0-9._:-.")
]


@API.route(
    "GET",
    "/api/v1/contexts/{context_id}",
    rpc="ContextService.GetContext",
    render=render.context_page,
    response_model=ContextPage,
    errors=(*_AUTHED, 404, 422),
    credentials=_SECURED,
    tag="contexts",
)
def get_context(
    context_id: ContextId, page_size: PageSize = None, page_token: PageToken = ""
) -> contexts_pb.GetContextRequest:
    """A conversation context's turns, oldest first; empty for a context without turns."""
    size = None if page_size is None else int32(page_size)
    return contexts_pb.GetContextRequest(
        context_id=context_id, page_size=size, page_token=page_token
    )


@API.route(
    "DELETE",
    "/api/v1/contexts/{context_id}",
    rpc="ContextService.DeleteContext",
    status=204,
    render=None,
    response_class=Response,
    errors=(*_AUTHED, 404, 422),
    credentials=_SECURED,
    tag="contexts",
)
def delete_context(context_id: ContextId) -> contexts_pb.DeleteContextRequest:
    """Delete a context's turns; later executions on it start afresh. Empty: nothing to do."""
    return contexts_pb.DeleteContextRequest(context_id=context_id)
