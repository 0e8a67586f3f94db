"""A job as the REST API's JSON says it (docs/contract.md §3), from its agentq.v1 message.

The one rendering of a job: the REST shim answers `GET /api/v1/jobs/{id}` with it, and
the server sends it as the data of a job event's webhook (README, Webhooks).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from agentq.v1 import job_pb2

_STATUS_NAMES = {
    job_pb2.JOB_STATUS_PENDING: "pending",
    job_pb2.JOB_STATUS_RUNNING: "running",
    job_pb2.JOB_STATUS_COMPLETED: "completed",
    job_pb2.JOB_STATUS_FAILED: "failed",
    job_pb2.JOB_STATUS_CANCELLED: "cancelled",
}


def time(stamp: Timestamp) -> str:
    """RFC 3339 in UTC with a Z and 0, 3, 6 or 9 fraction digits."""
    return stamp.ToJsonString()


def time_or_none(message: Message, field: str) -> str | None:
    """The time of a Timestamp field, None when unset."""
    return time(getattr(message, field)) if message.HasField(field) else None


def status_name(status: job_pb2.JobStatus.ValueType) -> str:
    """The lowercase word of a JobStatus value."""
    return _STATUS_NAMES[status]


def job(message: job_pb2.Job) -> dict[str, Any]:
    """A job body, with its result once finished."""
    body = {
        "job_id": message.job_id,
        "agent_id": message.agent_id,
        "status": status_name(message.status),
        "result": result(message.result) if message.HasField("result") else None,
        "error": message.error if message.HasField("error") else None,
        "queued_at": time(message.queued_at),
        "started_at": time_or_none(message, "started_at"),
        "completed_at": time_or_none(message, "completed_at"),
        "attempts": message.attempts,
        "parent_job_id": message.parent_job_id if message.HasField("parent_job_id") else None,
        "depth": message.depth,
    }
    # Only with tracing on: a vex-api client sees the body it knows.
    if message.HasField("trace_id"):
        body["trace_id"] = message.trace_id
    return body


def result(message: job_pb2.AgentJobResult) -> dict[str, Any]:
    """A finished job's result."""
    return {
        "job_id": message.job_id,
        "agent_id": message.agent_id,
        "success": message.success,
        "response": message.response,
        "tokens_used": message.tokens_used,
        "completed_at": time(message.completed_at),
        "error": message.error if message.HasField("error") else None,
        "prompt": message.prompt,
        "context_hash": message.context_hash or None,
        "merkle_root": message.merkle_root or None,
        "verified": message.verified,
        "confidence": message.confidence if message.HasField("confidence") else None,
        "debate_rounds": message.debate_rounds,
        "new_context_id": message.new_context_id if message.HasField("new_context_id") else None,
    }
