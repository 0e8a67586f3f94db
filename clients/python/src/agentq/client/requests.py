"""The request messages both clients send, built from plain arguments."""

from __future__ import annotations

from typing import Any

from agentq.client.models import JobStatus
from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import job_service_pb2 as jobs_pb

# The optional fields of ExecuteRequest a caller may set besides the prompt.
EXECUTE_OPTIONS = frozenset(
    {
        "context_id",
        "enable_adversarial",
        "enable_self_correction",
        "max_debate_rounds",
        "parent_job_id",
    }
)


def create_agent_request(
    name: str, role: str, max_depth: int | None, spawn_shadow: bool
) -> agents_pb.CreateAgentRequest:
    """CreateAgentRequest; an unset max_depth is the server's default."""
    return agents_pb.CreateAgentRequest(
        name=name, role=role, max_depth=max_depth, spawn_shadow=spawn_shadow
    )


def execute_request(
    agent_id: str, prompt: str, request_id: str, options: dict[str, Any]
) -> agents_pb.ExecuteRequest:
    """ExecuteRequest with its idempotency key; options left as None stay unset."""
    unknown = set(options) - EXECUTE_OPTIONS
    if unknown:
        raise TypeError(f"execute() got unexpected options: {', '.join(sorted(unknown))}")
    chosen = {name: value for name, value in options.items() if value is not None}
    return agents_pb.ExecuteRequest(
        agent_id=agent_id, prompt=prompt, request_id=request_id, **chosen
    )


def list_jobs_request(
    agent_id: str | None, status: JobStatus | str | None, page_size: int | None, page_token: str
) -> jobs_pb.ListJobsRequest:
    """ListJobsRequest with its filters; None leaves a filter unset."""
    request = jobs_pb.ListJobsRequest(page_size=page_size, page_token=page_token)
    if agent_id is not None:
        request.agent_id = agent_id
    if status is not None:
        request.status = JobStatus(status).to_proto()
    return request


def watch_request(job_id: str, after_sequence: int) -> jobs_pb.WatchJobRequest:
    """WatchJobRequest for the events after `after_sequence`."""
    return jobs_pb.WatchJobRequest(job_id=job_id, after_sequence=after_sequence)
