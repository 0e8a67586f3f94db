"""The agentq Python SDK: `Client` and `AsyncClient` over gRPC.

    from agentq.client import Client

    with Client("127.0.0.1:50051", api_key="agq_...") as client:
        agent = client.agents.create(name="helper", role="You answer briefly.")
        job = client.execute(agent.id, "What is agentq?")
        for event in job.events():
            print(event.type, event.delta)
        print(job.wait(timeout=60).result)

The names below are imported when first used, so that `agentq --help` (whose user
commands live in `agentq.client.cli`) starts without loading grpcio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentq.client.aio import AsyncClient, AsyncJobHandle
    from agentq.client.errors import (
        AgentQError,
        AlreadyExists,
        Cancelled,
        Conflict,
        CredentialsTooLarge,
        DeadlineExceeded,
        FieldViolation,
        InternalError,
        NotFound,
        PermissionDenied,
        RateLimited,
        Unauthenticated,
        Unavailable,
        ValidationError,
    )
    from agentq.client.models import (
        Agent,
        ContextTurn,
        EventType,
        Job,
        JobEvent,
        JobResult,
        JobStatus,
        JobStep,
    )
    from agentq.client.policy import RetryPolicy
    from agentq.client.sync import Client, JobHandle

_HOMES = {
    "AsyncClient": "aio",
    "AsyncJobHandle": "aio",
    "Client": "sync",
    "JobHandle": "sync",
    "RetryPolicy": "policy",
    **dict.fromkeys(
        [
            "Agent",
            "ContextTurn",
            "EventType",
            "Job",
            "JobEvent",
            "JobResult",
            "JobStatus",
            "JobStep",
        ],
        "models",
    ),
    **dict.fromkeys(
        [
            "AgentQError",
            "AlreadyExists",
            "Cancelled",
            "Conflict",
            "CredentialsTooLarge",
            "DeadlineExceeded",
            "FieldViolation",
            "InternalError",
            "NotFound",
            "PermissionDenied",
            "RateLimited",
            "Unauthenticated",
            "Unavailable",
            "ValidationError",
        ],
        "errors",
    ),
}
__all__ = [
    "Agent",
    "AgentQError",
    "AlreadyExists",
    "AsyncClient",
    "AsyncJobHandle",
    "Cancelled",
    "Client",
    "Conflict",
    "ContextTurn",
    "CredentialsTooLarge",
    "DeadlineExceeded",
    "EventType",
    "FieldViolation",
    "InternalError",
    "Job",
    "JobEvent",
    "JobHandle",
    "JobResult",
    "JobStatus",
    "JobStep",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "RetryPolicy",
    "Unauthenticated",
    "Unavailable",
    "ValidationError",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'agentq.client' has no attribute {name!r}")
    return getattr(importlib.import_module(f"agentq.client.{home}"), name)
