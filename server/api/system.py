"""SystemService servicer: the public health report."""

from __future__ import annotations

from agentq.v1 import system_service_pb2 as pb
from agentq.v1 import system_service_pb2_grpc as pb_grpc
from server.api.context import Context
from server.api.convert import timestamp
from server.service.services import Services


class SystemServicer(pb_grpc.SystemServiceServicer):
    """Health of the service and its database."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def GetHealth(
        self, request: pb.GetHealthRequest, context: Context
    ) -> pb.GetHealthResponse:
        health = await self._services.system.health()
        return pb.GetHealthResponse(
            status="healthy",
            version=health.version,
            timestamp=timestamp(health.checked_at),
            db_type=health.db_type,
        )
