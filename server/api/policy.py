"""Who may call which RPC: the one table the interceptor enforces."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.descriptor import FileDescriptor


@dataclass(frozen=True)
class Access:
    """Roles allowed (admin always is; None: any role) and the scope an API key needs."""

    roles: frozenset[str] | None
    scope: str | None


# Methods anyone may call, without credentials.
PUBLIC = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/agentq.v1.SystemService/GetHealth",
    }
)
# Methods for the operator's admin token only.
ADMIN = frozenset(
    {
        "/agentq.v1.AdminService/CreateApiKey",
        "/agentq.v1.AdminService/ListApiKeys",
        "/agentq.v1.AdminService/RevokeApiKey",
        "/agentq.v1.AdminService/SetTenantLimits",
        "/agentq.v1.AdminService/GetTenantLimits",
    }
)
# Methods that take an API key and nothing else.
KEY_EXCHANGE = frozenset({"/agentq.v1.TokenService/CreateToken"})

_WRITERS = frozenset({"user"})
_CALLERS = frozenset({"user", "agent"})
ACCESS: dict[str, Access] = {
    "/agentq.v1.AgentService/CreateAgent": Access(_WRITERS, "agents:write"),
    "/agentq.v1.AgentService/GetAgent": Access(_CALLERS, "agents:read"),
    "/agentq.v1.AgentService/ListAgents": Access(_CALLERS, "agents:read"),
    "/agentq.v1.AgentService/DeleteAgent": Access(_WRITERS, "agents:write"),
    "/agentq.v1.AgentService/Execute": Access(_CALLERS, "jobs:write"),
    "/agentq.v1.JobService/GetJob": Access(_CALLERS, "jobs:read"),
    "/agentq.v1.JobService/ListJobs": Access(_CALLERS, "jobs:read"),
    "/agentq.v1.JobService/CancelJob": Access(_CALLERS, "jobs:write"),
    "/agentq.v1.JobService/WatchJob": Access(_CALLERS, "jobs:read"),
    # A context is made of jobs' turns: reading and deleting it are reading and changing jobs.
    "/agentq.v1.ContextService/GetContext": Access(_CALLERS, "jobs:read"),
    "/agentq.v1.ContextService/DeleteContext": Access(_CALLERS, "jobs:write"),
    # The log is mostly the jobs' events; emitting one is a write like queueing a job
    # (README, Event log).
    "/agentq.v1.EventService/ListEvents": Access(_CALLERS, "jobs:read"),
    "/agentq.v1.EventService/GetEvent": Access(_CALLERS, "jobs:read"),
    "/agentq.v1.EventService/CreateEvent": Access(_CALLERS, "jobs:write"),
    # Self-service keys (README, Self-service API keys): what may mint keys may do more
    # than its scope says, so an `agent` may not, whatever its scopes.
    "/agentq.v1.ApiKeyService/CreateKey": Access(_WRITERS, "keys:write"),
    "/agentq.v1.ApiKeyService/ListKeys": Access(_WRITERS, "keys:write"),
    "/agentq.v1.ApiKeyService/DeleteKey": Access(_WRITERS, "keys:write"),
    # Workflows (README, Workflows): defining one is like defining an agent, running
    # one and reading its runs like queueing and reading jobs.
    "/agentq.v1.WorkflowService/CreateWorkflow": Access(_WRITERS, "agents:write"),
    "/agentq.v1.WorkflowService/ListWorkflows": Access(_CALLERS, "agents:read"),
    "/agentq.v1.WorkflowService/GetWorkflow": Access(_CALLERS, "agents:read"),
    "/agentq.v1.WorkflowService/UpdateWorkflow": Access(_WRITERS, "agents:write"),
    "/agentq.v1.WorkflowService/DeleteWorkflow": Access(_WRITERS, "agents:write"),
    "/agentq.v1.WorkflowService/RunWorkflow": Access(_CALLERS, "jobs:write"),
    "/agentq.v1.WorkflowService/ListWorkflowRuns": Access(_CALLERS, "jobs:read"),
    "/agentq.v1.WorkflowService/GetWorkflowRun": Access(_CALLERS, "jobs:read"),
    # Webhooks (README, Webhooks) send the tenant's events to a URL of its choice: reading
    # them is reading jobs, and changing them a write a role `agent` may not make.
    "/agentq.v1.WebhookService/CreateWebhook": Access(_WRITERS, "jobs:write"),
    "/agentq.v1.WebhookService/ListWebhooks": Access(_CALLERS, "jobs:read"),
    "/agentq.v1.WebhookService/GetWebhook": Access(_CALLERS, "jobs:read"),
    "/agentq.v1.WebhookService/UpdateWebhook": Access(_WRITERS, "jobs:write"),
    "/agentq.v1.WebhookService/DeleteWebhook": Access(_WRITERS, "jobs:write"),
    "/agentq.v1.WebhookService/RotateWebhookSecret": Access(_WRITERS, "jobs:write"),
    "/agentq.v1.WebhookService/ListWebhookDeliveries": Access(_CALLERS, "jobs:read"),
    "/agentq.v1.WebhookService/RetryWebhookDelivery": Access(_WRITERS, "jobs:write"),
    "/agentq.v1.TokenService/CreateToken": Access(None, None),
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Access(None, None),
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Access(None, None),
}


def method_names(files: Iterable[FileDescriptor]) -> set[str]:
    """Full method names (`/pkg.Service/Method`) of every service in the given files."""
    return {
        f"/{service.full_name}/{method.name}"
        for file in files
        for service in file.services_by_name.values()
        for method in service.methods
    }


def check_complete(files: Iterable[FileDescriptor]) -> None:
    """Refuse to serve an RPC that the table forgot: its access would be undecided."""
    missing = sorted(method_names(files) - ACCESS.keys() - PUBLIC - ADMIN)
    if missing:
        raise RuntimeError(f"RPCs missing from the access policy: {', '.join(missing)}")
