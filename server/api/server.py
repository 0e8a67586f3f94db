"""Builds the grpc.aio server: servicers, the guard interceptor, health and reflection."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agentq.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    agent_service_pb2,
    agent_service_pb2_grpc,
    api_key_service_pb2,
    api_key_service_pb2_grpc,
    context_service_pb2,
    context_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    job_service_pb2,
    job_service_pb2_grpc,
    system_service_pb2,
    system_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
    webhook_service_pb2,
    webhook_service_pb2_grpc,
    workflow_service_pb2,
    workflow_service_pb2_grpc,
)
from server.api import policy
from server.api.admin import AdminServicer
from server.api.agents import AgentServicer
from server.api.api_keys import ApiKeyServicer
from server.api.contexts import ContextServicer
from server.api.credential_size import MAX_METADATA_BYTES
from server.api.events import EventServicer
from server.api.guard import Guard, GuardInterceptor, JwtSettings
from server.api.jobs import JobServicer
from server.api.system import SystemServicer
from server.api.tokens import TokenServicer
from server.api.webhooks import WebhookServicer
from server.api.workflows import WorkflowServicer
from server.configuration import ConfigurationError
from server.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from server.service.access import TokenIssuer
from server.service.services import Services
from server.settings import Settings

_FILES = (
    agent_service_pb2.DESCRIPTOR,
    job_service_pb2.DESCRIPTOR,
    context_service_pb2.DESCRIPTOR,
    event_service_pb2.DESCRIPTOR,
    system_service_pb2.DESCRIPTOR,
    admin_service_pb2.DESCRIPTOR,
    token_service_pb2.DESCRIPTOR,
    api_key_service_pb2.DESCRIPTOR,
    workflow_service_pb2.DESCRIPTOR,
    webhook_service_pb2.DESCRIPTOR,
)
SERVICE_NAMES = tuple(
    service.full_name for file in _FILES for service in file.services_by_name.values()
)


@dataclass
class RunningServer:
    """A started gRPC server and what it holds open, stopped together."""

    server: grpc.aio.Server
    port: int
    limiter: RateLimiter
    services: Services

    async def stop(self, *, grace: float) -> None:
        """Finish calls in flight (up to `grace` seconds), then close the pools."""
        await self.server.stop(grace=grace)
        await self.limiter.close()
        await self.services.close()  # sends what the last calls queued


async def start_grpc_server(
    settings: Settings, services: Services, *, secret: str, address: str
) -> RunningServer:
    """Start serving on `address` (port 0 picks a free one), reporting SERVING.

    The server owns `services` from then on: stopping it closes them.
    """
    limiter: RateLimiter
    if settings.redis_url:
        limiter = RedisRateLimiter(settings.redis_url, namespace=settings.redis_namespace)
    else:
        limiter = MemoryRateLimiter()
    try:
        server, port, health_servicer = _bind(settings, services, secret, address, limiter)
    except ConfigurationError:
        await limiter.close()
        await services.close()
        raise
    running = RunningServer(server, port, limiter, services)
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return running


def _bind(
    settings: Settings, services: Services, secret: str, address: str, limiter: RateLimiter
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A server with every servicer, bound to `address`; with its port and health."""
    policy.check_complete(_FILES)
    guard = Guard(
        jwt=JwtSettings(secret, settings.jwt_issuer, settings.jwt_audience, settings.jwt_max_ttl_s),
        access=services.access,
        limiter=limiter,
        admin_token=settings.admin_token.get_secret_value() if settings.admin_token else None,
        failure_burst=settings.auth_failure_burst,
        trusted_proxies=settings.trusted_proxies,
    )
    options = [
        # grpcio shares ports by default (SO_REUSEPORT): a second server on a port in use
        # would start and take half the calls instead of failing.
        ("grpc.so_reuseport", 0),
        # Soft and hard limit alike: no call under it is refused at random.
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
    ]
    server = grpc.aio.server(interceptors=[GuardInterceptor(guard)], options=options)
    agent_service_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(services), server)
    job_service_pb2_grpc.add_JobServiceServicer_to_server(
        JobServicer(services, poll_s=settings.stream_poll_s), server
    )
    context_service_pb2_grpc.add_ContextServiceServicer_to_server(ContextServicer(services), server)
    event_service_pb2_grpc.add_EventServiceServicer_to_server(EventServicer(services), server)
    system_service_pb2_grpc.add_SystemServiceServicer_to_server(SystemServicer(services), server)
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(services.access), server
    )
    api_key_service_pb2_grpc.add_ApiKeyServiceServicer_to_server(ApiKeyServicer(services), server)
    workflow_service_pb2_grpc.add_WorkflowServiceServicer_to_server(
        WorkflowServicer(services), server
    )
    webhook_service_pb2_grpc.add_WebhookServiceServicer_to_server(WebhookServicer(services), server)
    issuer = TokenIssuer(secret=secret, issuer=settings.jwt_issuer, lifetime_s=settings.token_ttl_s)
    token_service_pb2_grpc.add_TokenServiceServicer_to_server(TokenServicer(issuer), server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        raise _cannot_listen(address) from None
    return server, port, health_servicer


def _cannot_listen(address: str) -> ConfigurationError:
    """Why gRPC could not bind `address`: grpcio does not say, a plain socket does."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reason = "the gRPC server could not bind it"
    try:
        with socket.create_server((host, int(port)), family=family):
            pass
    except OSError as error:
        # Not error.strerror: socket.create_server rewrites it into a longer sentence.
        reason = os.strerror(error.errno) if error.errno else str(error)
    except ValueError as error:
        reason = str(error)
    return ConfigurationError(f"cannot listen on {address}: {reason.lower()}")
