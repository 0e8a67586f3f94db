"""agentq.v1 messages rendered as the exact JSON of docs/contract.md §3."""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json
from starlette.responses import Response

from agentq.client.wire import job as job
from agentq.client.wire import result as _result
from agentq.client.wire import status_name as status_name
from agentq.client.wire import time as _time
from agentq.client.wire import time_or_none as _time_or_none
from agentq.v1 import (
    admin_service_pb2,
    agent_pb2,
    agent_service_pb2,
    api_key_service_pb2,
    context_service_pb2,
    job_pb2,
    job_service_pb2,
    system_service_pb2,
    token_service_pb2,
)


def json_response(body: Any, status_code: int = 200) -> Response:
    """`body` as the JSON response a route's response_model would have produced.

    Routes hand FastAPI a finished response, so it does not validate and
    re-serialise each body against its response_model (that model still
    documents the route): these bodies are built field by field from proto
    messages whose types already match. pydantic_core writes the same bytes
    FastAPI's serialiser does, down to floats and NaN/Infinity as null.
    """
    content = to_json(body, inf_nan_mode="null")
    return Response(content, status_code=status_code, media_type="application/json")


def health(reply: system_service_pb2.GetHealthResponse) -> dict[str, Any]:
    """GET /health body."""
    return {
        "status": reply.status,
        "version": reply.version,
        "timestamp": _time(reply.timestamp),
        "db_type": reply.db_type,
    }


def agent(message: agent_pb2.Agent) -> dict[str, Any]:
    """An agent body."""
    return {
        "id": message.id,
        "name": message.name,
        "role": message.role,
        "max_depth": message.max_depth,
        "spawn_shadow": message.spawn_shadow,
        "generation": message.generation,
        "fitness": message.fitness,
        "created_at": _time(message.created_at),
        "verification": _verification(message.verification)
        if message.HasField("verification")
        else None,
    }


def _verification(prompts: agent_pb2.VerificationPrompts) -> dict[str, Any]:
    return {
        "critic": prompts.critic if prompts.HasField("critic") else None,
        "defender": prompts.defender if prompts.HasField("defender") else None,
        "judge": prompts.judge if prompts.HasField("judge") else None,
        "reviser": prompts.reviser if prompts.HasField("reviser") else None,
    }


def execute_ack(reply: agent_service_pb2.ExecuteResponse) -> dict[str, Any]:
    """The 202 body of an execution."""
    return {
        "agent_id": reply.agent_id,
        "job_id": reply.job_id,
        "status": status_name(reply.status),
        "response": reply.response,
        "verified": reply.verified,
        "confidence": reply.confidence,
        "context_hash": reply.context_hash,
        "merkle_root": reply.merkle_root if reply.HasField("merkle_root") else None,
        "latency_ms": reply.latency_ms,
    }


def page(items: list[dict[str, Any]], size: int, next_token: str) -> dict[str, Any]:
    """A list body: `{"data": [...], "meta": {"per_page", "next_page_token"}}`."""
    return {"data": items, "meta": {"per_page": size, "next_page_token": next_token or None}}


def agent_page(reply: agent_service_pb2.ListAgentsResponse) -> dict[str, Any]:
    """A page of agents."""
    return page([agent(a) for a in reply.agents], reply.page_size, reply.next_page_token)


def job_page(reply: job_service_pb2.ListJobsResponse) -> dict[str, Any]:
    """A page of jobs."""
    return page([job(j) for j in reply.jobs], reply.page_size, reply.next_page_token)


def context_page(reply: context_service_pb2.GetContextResponse) -> dict[str, Any]:
    """A page of a context's turns."""
    turns = [
        {
            "job_id": turn.job_id,
            "prompt": turn.prompt,
            "response": turn.response,
            "created_at": _time(turn.created_at),
        }
        for turn in reply.turns
    ]
    return {"context_id": reply.context_id, **page(turns, reply.page_size, reply.next_page_token)}


_EVENT_NAMES = {
    job_pb2.JOB_EVENT_TYPE_QUEUED: "queued",
    job_pb2.JOB_EVENT_TYPE_STARTED: "started",
    job_pb2.JOB_EVENT_TYPE_RETRYING: "retrying",
    job_pb2.JOB_EVENT_TYPE_TOKEN: "token",
    job_pb2.JOB_EVENT_TYPE_COMPLETED: "completed",
    job_pb2.JOB_EVENT_TYPE_FAILED: "failed",
    job_pb2.JOB_EVENT_TYPE_CANCELLED: "cancelled",
    job_pb2.JOB_EVENT_TYPE_STEP: "step",
}
_STEP_KIND_NAMES = {
    job_pb2.STEP_KIND_ANSWER: "answer",
    job_pb2.STEP_KIND_CRITIQUE: "critique",
    job_pb2.STEP_KIND_DEFENCE: "defence",
    job_pb2.STEP_KIND_VERDICT: "verdict",
    job_pb2.STEP_KIND_REVISION: "revision",
    job_pb2.STEP_KIND_SAFETY: "safety",
}


def event(message: job_pb2.JobEvent) -> tuple[str, dict[str, Any]]:
    """An event's SSE name and JSON data."""
    name = _EVENT_NAMES[message.type]
    data: dict[str, Any] = {
        "job_id": message.job_id,
        "sequence": message.sequence,
        "type": name,
        "created_at": _time(message.created_at),
        "attempt": message.attempt,
    }
    if message.HasField("error"):
        data["error"] = message.error
    if message.HasField("delay_seconds"):
        data["delay_seconds"] = message.delay_seconds
    if name == "token":
        data["delta"] = message.delta
    if message.HasField("result"):
        data["result"] = _result(message.result)
    if message.HasField("step"):
        data["step"] = _step(message.step)
    return name, data


def _step(step: job_pb2.JobStep) -> dict[str, Any]:
    return {
        "kind": _STEP_KIND_NAMES[step.kind],
        "round": step.round,
        "tokens": step.tokens,
        "hash": step.hash,
        "text": step.text,
        "confidence": step.confidence if step.HasField("confidence") else None,
        "evidence": step.evidence if step.HasField("evidence") else None,
    }


def api_key(message: admin_service_pb2.ApiKey) -> dict[str, Any]:
    """An API key's metadata."""
    return {
        "id": message.id,
        "tenant_id": message.tenant_id,
        "name": message.name,
        "role": message.role,
        "scopes": list(message.scopes),
        "prefix": message.prefix,
        "created_at": _time(message.created_at),
        "last_used_at": _time_or_none(message, "last_used_at"),
        "expires_at": _time_or_none(message, "expires_at"),
        "revoked_at": _time_or_none(message, "revoked_at"),
        "tier": message.tier if message.HasField("tier") else None,
    }


def created_api_key(reply: admin_service_pb2.CreateApiKeyResponse) -> dict[str, Any]:
    """A new API key: its metadata and, this once, the key itself."""
    return {**api_key(reply.api_key), "key": reply.key}


def api_keys(reply: admin_service_pb2.ListApiKeysResponse) -> dict[str, Any]:
    """API keys' metadata."""
    return {"data": [api_key(k) for k in reply.api_keys]}


def api_key_page(reply: api_key_service_pb2.ListKeysResponse) -> dict[str, Any]:
    """A page of the caller's tenant's API keys' metadata."""
    return page([api_key(k) for k in reply.api_keys], reply.page_size, reply.next_page_token)


def limits(message: admin_service_pb2.TenantLimits) -> dict[str, Any]:
    """A tenant's limits; a negative cap on the wire means none."""
    cap = message.max_unfinished_jobs
    return {
        "tenant_id": message.tenant_id,
        "tier": message.tier,
        "rate_per_second": message.rate_per_second,
        "burst": message.burst,
        "max_unfinished_jobs": cap if cap >= 0 else None,
        "per_minute": message.per_minute if message.HasField("per_minute") else None,
        "per_day": message.per_day if message.HasField("per_day") else None,
    }


def token(message: token_service_pb2.CreateTokenResponse) -> dict[str, Any]:
    """A token exchanged for an API key."""
    return {
        "access_token": message.access_token,
        "token_type": message.token_type,
        "expires_in": message.expires_in,
        "expires_at": _time(message.expires_at),
    }
