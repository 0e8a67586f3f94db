"""ContextService servicer: proto in, one service call, proto out."""

from __future__ import annotations

from agentq.v1 import context_service_pb2 as pb
from agentq.v1 import context_service_pb2_grpc as pb_grpc
from server.api.context import Context, current_principal
from server.api.convert import turn_message
from server.service.services import Services
from server.validation import parse_context_id


class ContextServicer(pb_grpc.ContextServiceServicer):
    """Read and delete conversation contexts."""

    def __init__(self, services: Services) -> None:
        self._contexts = services.contexts

    async def GetContext(
        self, request: pb.GetContextRequest, context: Context
    ) -> pb.GetContextResponse:
        context_id = parse_context_id(request.context_id)
        page = await self._contexts.get_context(
            current_principal(),
            context_id,
            size=request.page_size if request.HasField("page_size") else None,
            token=request.page_token,
        )
        return pb.GetContextResponse(
            context_id=context_id,
            turns=[turn_message(t) for t in page.items],
            page_size=page.size,
            next_page_token=page.next_token or "",
        )

    async def DeleteContext(
        self, request: pb.DeleteContextRequest, context: Context
    ) -> pb.DeleteContextResponse:
        context_id = parse_context_id(request.context_id)
        deleted = await self._contexts.delete_context(current_principal(), context_id)
        return pb.DeleteContextResponse(deleted_turns=deleted)
