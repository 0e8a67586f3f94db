"""The event log's routes (/api/v1/events), each one RPC of EventService; their JSON shapes.

Filters and the type travel as sent: the server judges them (422) with the messages a
gRPC client gets. Only what JSON can say and protobuf cannot carry is refused here: data
that is not an object, numbers no double holds (google.protobuf.Struct keeps every
number as one), and text with a lone surrogate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Path, Query
from google.protobuf import struct_pb2
from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import PydanticCustomError

from agentq.v1 import event_service_pb2 as events_pb
from rest_shim import render, rules
from rest_shim.routes import _AUTHED, _BODY, _SECURED, PageSize, PageToken, int32
from rest_shim.rules import documented
from rest_shim.schemas import PageMeta, StrictStr, unicode_text
from rest_shim.table import RouteTable

# The server's rules (server/service/event_log.py), for the OpenAPI document.
TYPE_CHARACTERS = "a-z0-9._-"
MAX_TYPE_CHARS = 100
DATA_NUMBER_MESSAGE = "Invalid data: numbers must be finite doubles"
# Deeper data protobuf cannot carry to the server; its rule and message, as it words them.
MAX_DATA_DEPTH = 32
DATA_DEPTH_MESSAGE = f"Invalid data: must nest at most {MAX_DATA_DEPTH} objects and arrays deep"
_DOUBLE_MAX = 1.7976931348623157e308


_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
EVENT_ID_PATTERN = f"^(?:evt_{_UUID}|job_{_UUID}_[0-9]{{10}})$"


def event_type() -> dict[str, Any]:
    return {"type": "string", "pattern": f"^[{TYPE_CHARACTERS}]{{1,{MAX_TYPE_CHARS}}}$"}


def finite_doubles(
    message: str, *, max_depth: int = 0, depth_message: str = ""
) -> Callable[[Any], Any]:
    """A validator refusing numbers a double cannot hold (JSON's integers are unbounded,
    1e400 is inf) with `message`, strings and keys no protobuf carries as StrictStr does,
    and, given `max_depth`, objects and arrays nested deeper (the value itself is level 1)
    with `depth_message`."""

    def check(value: Any, depth: int = 1) -> Any:
        if isinstance(value, dict | list):
            if max_depth and depth > max_depth:
                raise PydanticCustomError("value_error", depth_message)
            for item in value.values() if isinstance(value, dict) else value:
                check(item, depth + 1)
            # Keys too are strings a lone surrogate ("\ud800") may break.
            for key in value if isinstance(value, dict) else ():
                unicode_text(key)
        elif isinstance(value, str):
            unicode_text(value)
        elif _beyond_double(value):
            raise PydanticCustomError("value_error", message)
        return value

    return check


_doubles = finite_doubles(
    DATA_NUMBER_MESSAGE, max_depth=MAX_DATA_DEPTH, depth_message=DATA_DEPTH_MESSAGE
)


def _beyond_double(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    # An int is compared exactly: converting a huge one would overflow.
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > _DOUBLE_MAX


class CreateEventBody(BaseModel):
    """POST /api/v1/events."""

    type: Annotated[StrictStr, documented(event_type())] = Field(
        description="1-100 characters of a-z0-9._-; `job.` and `workflow.` are the service's own."
    )
    data: Annotated[dict[str, Any], AfterValidator(_doubles)] = Field(
        default_factory=dict,
        description="A JSON object of at most 65,536 bytes as compact UTF-8 JSON.",
    )


class EventOut(BaseModel):
    """One event of the tenant's log."""

    id: str = Field(description="Opaque: `evt_<uuid>` emitted, `job_<job>_<n>` of a job.")
    type: str = Field(description="The emitted type, or `job.` and the job event's name.")
    created_at: str = Field(description="When it happened (RFC 3339, UTC).")
    job_id: str | None
    agent_id: str | None
    data: dict[str, Any]


class EventPage(BaseModel):
    """A page of the tenant's events, newest first."""

    data: list[EventOut]
    meta: PageMeta


def plain(value: Any) -> Any:
    """A Struct's value as JSON: whole numbers as integers, as the client sent them."""
    if isinstance(value, struct_pb2.Struct):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, struct_pb2.ListValue):
        return [plain(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


def event(message: events_pb.Event) -> dict[str, Any]:
    """An event body."""
    return {
        "id": message.id,
        "type": message.type,
        "created_at": message.created_at.ToJsonString(),
        "job_id": message.job_id if message.HasField("job_id") else None,
        "agent_id": message.agent_id if message.HasField("agent_id") else None,
        "data": plain(message.data),
    }


def event_page(reply: events_pb.ListEventsResponse) -> dict[str, Any]:
    """A page of events."""
    return render.page([event(e) for e in reply.events], reply.page_size, reply.next_page_token)


EVENTS = RouteTable()
_Filter = Annotated[str | None, Query()]


@EVENTS.route(
    "GET",
    "/api/v1/events",
    rpc="EventService.ListEvents",
    render=event_page,
    response_model=EventPage,
    errors=(*_AUTHED, 422),
    credentials=_SECURED,
    tag="events",
)
def list_events(
    type: Annotated[
        str | None, documented(event_type(), nullable=True), Query(description="Only this type.")
    ] = None,
    job_id: Annotated[
        str | None, documented(rules.uuid(), nullable=True), Query(description="Only its events.")
    ] = None,
    agent_id: Annotated[
        str | None,
        documented(rules.uuid(), nullable=True),
        Query(description="Only its jobs' events."),
    ] = None,
    since: Annotated[
        str | None,
        documented({"type": "string", "format": "date-time"}, nullable=True),
        Query(description="Only events at or after this RFC 3339 time."),
    ] = None,
    page_size: PageSize = None,
    page_token: PageToken = "",
) -> events_pb.ListEventsRequest:
    """The tenant's events, newest first: its jobs' (no token deltas) and those emitted."""
    return events_pb.ListEventsRequest(
        page_size=None if page_size is None else int32(page_size),
        page_token=page_token,
        type=type,
        job_id=job_id,
        agent_id=agent_id,
        since=since,
    )


@EVENTS.route(
    "GET",
    "/api/v1/events/{event_id}",
    rpc="EventService.GetEvent",
    render=lambda reply: event(reply.event),
    response_model=EventOut,
    errors=(*_AUTHED, 404, 422),
    credentials=_SECURED,
    tag="events",
)
def get_event(
    event_id: Annotated[
        str,
        documented({"type": "string", "pattern": EVENT_ID_PATTERN}),
        Path(description="The id the log gave the event."),
    ],
) -> events_pb.GetEventRequest:
    """One event of the tenant; another tenant's is a 404."""
    return events_pb.GetEventRequest(event_id=event_id)


@EVENTS.route(
    "POST",
    "/api/v1/events",
    rpc="EventService.CreateEvent",
    status=201,
    render=lambda reply: event(reply.event),
    response_model=EventOut,
    errors=(*_AUTHED, *_BODY),
    credentials=_SECURED,
    tag="events",
)
def create_event(body: CreateEventBody) -> events_pb.CreateEventRequest:
    """Emit an event of the tenant's own: a type and a JSON object of data."""
    data = struct_pb2.Struct()
    data.update(body.data)
    return events_pb.CreateEventRequest(type=body.type, data=data)
