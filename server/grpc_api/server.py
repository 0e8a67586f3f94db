"""Builds the grpc.aio server: servicers, the guard interceptor, health and reflection."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agentq.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    agent_service_pb2,
    agent_service_pb2_grpc,
    job_service_pb2,
    job_service_pb2_grpc,
    system_service_pb2,
    system_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)
from server.access import TokenIssuer
from server.grpc_api import policy
from server.grpc_api.admin import AdminServicer
from server.grpc_api.agents import AgentServicer
from server.grpc_api.blocking import Blocking
from server.grpc_api.gate import Gate, JwtSettings
from server.grpc_api.interceptor import GuardInterceptor
from server.grpc_api.jobs import JobServicer
from server.grpc_api.system import SystemServicer
from server.grpc_api.tokens import TokenServicer
from server.runtime import Runtime

_FILES = (
    agent_service_pb2.DESCRIPTOR,
    job_service_pb2.DESCRIPTOR,
    system_service_pb2.DESCRIPTOR,
    admin_service_pb2.DESCRIPTOR,
    token_service_pb2.DESCRIPTOR,
)
SERVICE_NAMES = tuple(
    service.full_name for file in _FILES for service in file.services_by_name.values()
)


def create_grpc_server(
    runtime: Runtime, *, secret: str, blocking: Blocking, address: str
) -> tuple[grpc.aio.Server, int]:
    """A server bound to `address` (port 0 picks a free one); returns it and its port."""
    policy.check_complete(_FILES)
    settings = runtime.settings
    gate = Gate(
        jwt=JwtSettings(secret, settings.jwt_issuer, settings.jwt_audience),
        access=runtime.access,
        limiter=runtime.limiter,
        blocking=blocking,
        admin_token=settings.admin_token.get_secret_value() if settings.admin_token else None,
    )
    server = grpc.aio.server(interceptors=[GuardInterceptor(gate)])
    services = runtime.services
    agent_service_pb2_grpc.add_AgentServiceServicer_to_server(
        AgentServicer(services, blocking), server
    )
    job_service_pb2_grpc.add_JobServiceServicer_to_server(
        JobServicer(services, blocking, poll_s=settings.stream_poll_s), server
    )
    system_service_pb2_grpc.add_SystemServiceServicer_to_server(
        SystemServicer(services, blocking), server
    )
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(runtime.access, blocking), server
    )
    issuer = TokenIssuer(secret=secret, issuer=settings.jwt_issuer, lifetime_s=settings.token_ttl_s)
    token_service_pb2_grpc.add_TokenServiceServicer_to_server(
        TokenServicer(issuer, lifetime_s=settings.token_ttl_s), server
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
