"""Builds the grpc.aio server: servicers, the guard interceptor, health and reflection."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agentq.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    job_service_pb2,
    job_service_pb2_grpc,
    system_service_pb2,
    system_service_pb2_grpc,
)
from server.grpc_api import policy
from server.grpc_api.agents import AgentServicer
from server.grpc_api.blocking import Blocking
from server.grpc_api.interceptor import Authenticate, GuardInterceptor
from server.grpc_api.jobs import JobServicer
from server.grpc_api.system import SystemServicer
from server.services import Services

_FILES = (agent_service_pb2.DESCRIPTOR, job_service_pb2.DESCRIPTOR, system_service_pb2.DESCRIPTOR)
SERVICE_NAMES = tuple(
    service.full_name for file in _FILES for service in file.services_by_name.values()
)


def create_grpc_server(
    services: Services,
    authenticate: Authenticate,
    blocking: Blocking,
    *,
    address: str,
    stream_poll_s: float = 0.25,
) -> tuple[grpc.aio.Server, int]:
    """A server bound to `address` (port 0 picks a free one); returns it and its port."""
    policy.check_complete(_FILES)
    server = grpc.aio.server(interceptors=[GuardInterceptor(authenticate)])
    agent_service_pb2_grpc.add_AgentServiceServicer_to_server(
        AgentServicer(services, blocking), server
    )
    job_service_pb2_grpc.add_JobServiceServicer_to_server(
        JobServicer(services, blocking, poll_s=stream_poll_s), server
    )
    system_service_pb2_grpc.add_SystemServiceServicer_to_server(
        SystemServicer(services, blocking), server
    )

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind the gRPC server to {address}")
    server.health_servicer = health_servicer  # type: ignore[attr-defined]
    return server, port


async def mark_serving(server: grpc.aio.Server) -> None:
    """Report SERVING for the server and each agentq service."""
    health_servicer = server.health_servicer  # type: ignore[attr-defined]
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
