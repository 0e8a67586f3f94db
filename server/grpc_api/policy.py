"""Which callers may call which RPC: the one table the interceptor enforces."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.descriptor import FileDescriptor

# Methods anyone may call, without a token.
PUBLIC = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/agentq.v1.SystemService/GetHealth",
    }
)

# Roles allowed per method (admin is always allowed); None = any authenticated caller.
_READERS = frozenset({"user", "agent"})
ROLES: dict[str, frozenset[str] | None] = {
    "/agentq.v1.AgentService/CreateAgent": frozenset({"user"}),
    "/agentq.v1.AgentService/GetAgent": _READERS,
    "/agentq.v1.AgentService/ListAgents": _READERS,
    "/agentq.v1.AgentService/DeleteAgent": frozenset({"user"}),
    "/agentq.v1.AgentService/Execute": _READERS,
    "/agentq.v1.JobService/GetJob": _READERS,
    "/agentq.v1.JobService/ListJobs": _READERS,
    "/agentq.v1.JobService/CancelJob": _READERS,
    "/agentq.v1.JobService/WatchJob": _READERS,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": None,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": None,
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
    """Refuse to serve an RPC that the table forgot: it would be denied to everyone."""
    missing = sorted(method_names(files) - ROLES.keys() - PUBLIC)
    if missing:
        raise RuntimeError(f"RPCs missing from the access policy: {', '.join(missing)}")
