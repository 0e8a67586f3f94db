"""EventService servicer: proto in, one service call, proto out."""

from __future__ import annotations

from google.protobuf import json_format, struct_pb2

from agentq.v1 import event_service_pb2 as pb
from agentq.v1 import event_service_pb2_grpc as pb_grpc
from server.api.context import Context, current_principal
from server.api.convert import timestamp
from server.errors import InvalidArgument
from server.service.event_log import DATA_NUMBER_MESSAGE, EventQuery, LogEvent
from server.service.services import Services


def event_message(event: LogEvent) -> pb.Event:
    """The Event message of a log event."""
    data = struct_pb2.Struct()
    data.update(event.data)
    return pb.Event(
        id=event.id,
        type=event.type,
        created_at=timestamp(event.created_at),
        job_id=event.job_id,
        agent_id=event.agent_id,
        data=data,
    )


def _optional(request: pb.ListEventsRequest, field: str) -> str | None:
    return str(getattr(request, field)) if request.HasField(field) else None  # type: ignore[arg-type]


class EventServicer(pb_grpc.EventServiceServicer):
    """List, read and emit the events of the caller's tenant."""

    def __init__(self, services: Services) -> None:
        self._events = services.events

    async def ListEvents(
        self, request: pb.ListEventsRequest, context: Context
    ) -> pb.ListEventsResponse:
        query = EventQuery(
            type=_optional(request, "type"),
            job_id=_optional(request, "job_id"),
            agent_id=_optional(request, "agent_id"),
            since=_optional(request, "since"),
        )
        size = request.page_size if request.HasField("page_size") else None
        page = await self._events.list_events(
            current_principal(), query, size=size, token=request.page_token
        )
        events = [event_message(e) for e in page.items]
        return pb.ListEventsResponse(
            events=events, page_size=page.size, next_page_token=page.next_token or ""
        )

    async def GetEvent(self, request: pb.GetEventRequest, context: Context) -> pb.GetEventResponse:
        event = await self._events.get_event(current_principal(), request.event_id)
        return pb.GetEventResponse(event=event_message(event))

    async def CreateEvent(
        self, request: pb.CreateEventRequest, context: Context
    ) -> pb.CreateEventResponse:
        try:
            data = json_format.MessageToDict(request.data)
        except ValueError:  # NaN or an infinity, which JSON has no word for
            raise InvalidArgument.field("data", DATA_NUMBER_MESSAGE) from None
        event = await self._events.emit(current_principal(), request.type, data)
        return pb.CreateEventResponse(event=event_message(event))
