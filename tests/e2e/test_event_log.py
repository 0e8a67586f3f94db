"""The tenant-wide event log end to end, over REST and gRPC on one embedded server: a job's
run shows in it in order, emitted events are read back alike over both (the parity test),
filters and pages, tenant isolation, and every rule's exact error (README, Event log)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from sqlalchemy import func, select

from agentq.v1 import event_service_pb2 as pb
from agentq.v1 import event_service_pb2_grpc as pb_grpc
from rest_shim.event_routes import event as rendered
from server.store.tables import client_events
from tests.e2e.harness import RestThread, ServerThread, rpc_error, token
from tests.e2e.rest_errors_helpers import assert_error, assert_validation_error, nested_arrays
from tests.e2e.rest_helpers import FINISHED, create_agent, http_client, submit, wait_for

TYPE_RULE = "Invalid type: must be 1 to 100 characters of a-z0-9._-"
RESERVED = "Invalid type: the prefix 'job.' is reserved for job events"
RESERVED_WORKFLOW = "Invalid type: the prefix 'workflow.' is reserved for workflow events"
TOO_BIG = "Invalid data: must be at most 65536 bytes as compact JSON"
NOT_A_DOUBLE = "Invalid data: numbers must be finite doubles"
TOO_DEEP = "Invalid data: must nest at most 32 objects and arrays deep"
SINCE_RULE = "Invalid since: must be an RFC 3339 timestamp, such as 2026-04-01T12:00:00Z"
NOT_AN_EVENT_ID = "Invalid event_id: not the id of an event"
# '{"s":"…"}' is 8 bytes around the string.
LARGEST = {"s": "x" * (65_536 - 8)}


class Caller:
    """One user of a tenant of their own, over REST and over gRPC."""

    def __init__(self, http: httpx.Client, stub: pb_grpc.EventServiceStub, bearer: str) -> None:
        self.http = http
        self.stub = stub
        self.metadata = (("authorization", f"Bearer {bearer}"),)

    def emit(self, type: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.http.post("/api/v1/events", json={"type": type, "data": data or {}})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def list(self, **query: Any) -> dict[str, Any]:
        response = self.http.get("/api/v1/events", params=query)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@contextmanager
def _user_of_a_new_tenant(server: ServerThread, shim: RestThread, sub: str) -> Iterator[Caller]:
    # Each test logs under tenants of its own, so tests on the module's server never see
    # each other's events.
    bearer = token(sub, tenant=f"t-{uuid.uuid4()}")
    with (
        http_client(shim.url, bearer) as http,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield Caller(http, pb_grpc.EventServiceStub(channel), bearer)


@pytest.fixture
def caller(server: ServerThread, shim: RestThread) -> Iterator[Caller]:
    """A user of a new tenant."""
    with _user_of_a_new_tenant(server, shim, "alice") as user:
        yield user


@pytest.fixture
def other(server: ServerThread, shim: RestThread) -> Iterator[Caller]:
    """A user of another new tenant."""
    with _user_of_a_new_tenant(server, shim, "bob") as user:
        yield user


def _stored(server: ServerThread) -> int:
    with server.engine.connect() as connection:
        count = select(func.count()).select_from(client_events)
        return int(connection.execute(count).scalar_one())


def test_a_jobs_run_shows_queued_started_and_completed_in_order(caller: Caller) -> None:
    agent = create_agent(caller.http)
    job_id = submit(caller.http, agent["id"])
    assert wait_for(caller.http, job_id, FINISHED)["status"] == "completed"

    page = caller.list(job_id=job_id)

    # Newest first; the answer's token deltas are not in the log.
    assert [e["type"] for e in page["data"]] == ["job.completed", "job.started", "job.queued"]
    assert {(e["job_id"], e["agent_id"]) for e in page["data"]} == {(job_id, agent["id"])}
    assert page["data"][2]["data"] == {"sequence": 1, "attempt": 0}
    assert page["meta"] == {"per_page": 20, "next_page_token": None}
    one = caller.http.get(f"/api/v1/events/{page['data'][0]['id']}")
    assert one.status_code == 200 and one.json() == page["data"][0]


def test_rest_and_grpc_emit_and_read_the_same_events(caller: Caller) -> None:
    over_rest = caller.emit("order.created", {"id": 7, "total": 12.5, "tags": ["a"], "x": None})
    data = struct_pb2.Struct()
    data.update({"id": 8})
    request = pb.CreateEventRequest(type="order.created", data=data)
    over_grpc = caller.stub.CreateEvent(request, metadata=caller.metadata, timeout=10).event

    listed = caller.stub.ListEvents(pb.ListEventsRequest(), metadata=caller.metadata, timeout=10)
    read = caller.stub.GetEvent(
        pb.GetEventRequest(event_id=over_rest["id"]), metadata=caller.metadata, timeout=10
    ).event

    # The gRPC replies, rendered as the shim renders them, are the REST bodies.
    assert caller.list()["data"] == [rendered(e) for e in listed.events]
    assert [rendered(e) for e in listed.events] == [rendered(over_grpc), over_rest]
    assert rendered(read) == over_rest
    assert over_rest["data"] == {"id": 7, "total": 12.5, "tags": ["a"], "x": None}
    assert (over_rest["job_id"], over_rest["agent_id"]) == (None, None)
    assert over_rest["id"].startswith("evt_") and over_rest["type"] == "order.created"
    assert rendered(over_grpc)["data"] == {"id": 8}


def test_filters_and_pages(caller: Caller) -> None:
    ticks = [caller.emit("tick", {"n": n})["id"] for n in range(3)]
    other = caller.emit("tock")
    since = other["created_at"]

    first = caller.list(type="tick", page_size=2)
    second = caller.list(type="tick", page_size=2, page_token=first["meta"]["next_page_token"])

    assert [e["id"] for e in first["data"] + second["data"]] == ticks[::-1]
    assert second["meta"]["next_page_token"] is None
    assert [e["id"] for e in caller.list(since=since)["data"]] == [other["id"]]
    assert caller.list(job_id=str(uuid.uuid4()))["data"] == []
    # A page token only works with the filters that issued it.
    response = caller.http.get(
        "/api/v1/events", params={"page_token": first["meta"]["next_page_token"]}
    )
    assert_validation_error(response, [(["query", "page_token"], "Invalid page_token")])


def test_another_tenants_events_are_not_found(caller: Caller, other: Caller) -> None:
    emitted = caller.emit("order.created")
    agent = create_agent(caller.http)
    job_id = submit(caller.http, agent["id"])
    job_event = caller.list(job_id=job_id)["data"][-1]

    assert other.list()["data"] == []
    assert other.list(job_id=job_id)["data"] == []
    for event in (emitted, job_event):
        response = other.http.get(f"/api/v1/events/{event['id']}")
        assert_error(response, 404, "NOT_FOUND", f"Event {event['id']} not found")
        with pytest.raises(grpc.RpcError) as raised:
            request = pb.GetEventRequest(event_id=event["id"])
            other.stub.GetEvent(request, metadata=other.metadata, timeout=10)
        assert rpc_error(raised.value)[:3] == (
            grpc.StatusCode.NOT_FOUND,
            f"Event {event['id']} not found",
            "NOT_FOUND",
        )


INVALID_EVENTS = [
    pytest.param("Order.Created", {}, [("type", TYPE_RULE)], id="type-uppercase"),
    pytest.param("", {}, [("type", TYPE_RULE)], id="type-empty"),
    pytest.param("a" * 101, {}, [("type", TYPE_RULE)], id="type-101"),
    pytest.param("order created", {}, [("type", TYPE_RULE)], id="type-space"),
    pytest.param("job.completed", {}, [("type", RESERVED)], id="type-reserved"),
    # A client passing for a run's outcome would reach every webhook that trusts it.
    pytest.param(
        "workflow.completed", {}, [("type", RESERVED_WORKFLOW)], id="type-reserved-workflow"
    ),
    pytest.param("big", {"s": "x" * 65_529}, [("data", TOO_BIG)], id="data-65537-bytes"),
    pytest.param("big", {"s": "é" * 32_765}, [("data", TOO_BIG)], id="data-bytes-not-chars"),
    pytest.param(
        "Bad", {"s": "x" * 70_000}, [("type", TYPE_RULE), ("data", TOO_BIG)], id="both-at-once"
    ),
]


@pytest.mark.parametrize(("type", "data", "violations"), INVALID_EVENTS)
def test_an_invalid_event_is_refused_alike_over_rest_and_grpc_and_stores_nothing(
    caller: Caller,
    server: ServerThread,
    type: str,
    data: dict[str, Any],
    violations: list[tuple[str, str]],
) -> None:
    before = _stored(server)
    response = caller.http.post("/api/v1/events", json={"type": type, "data": data})
    struct = struct_pb2.Struct()
    struct.update(data)
    with pytest.raises(grpc.RpcError) as raised:
        request = pb.CreateEventRequest(type=type, data=struct)
        caller.stub.CreateEvent(request, metadata=caller.metadata, timeout=10)

    assert_validation_error(response, [(["body", f], m) for f, m in violations])
    assert rpc_error(raised.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        violations[0][1],
        "VALIDATION_ERROR",
        violations,
    )
    assert _stored(server) == before


def test_the_largest_data_and_longest_type_are_accepted(caller: Caller) -> None:
    assert caller.emit("t" * 100, LARGEST)["data"] == LARGEST


def test_numbers_no_double_holds_are_refused(caller: Caller, server: ServerThread) -> None:
    before = _stored(server)
    huge = caller.http.post("/api/v1/events", json={"type": "n", "data": {"n": 10**400}})
    nan = struct_pb2.Struct()
    nan.update({"n": float("nan")})
    with pytest.raises(grpc.RpcError) as raised:
        request = pb.CreateEventRequest(type="n", data=nan)
        caller.stub.CreateEvent(request, metadata=caller.metadata, timeout=10)

    assert_validation_error(huge, [(["body", "data"], NOT_A_DOUBLE)])
    assert rpc_error(raised.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        NOT_A_DOUBLE,
        "VALIDATION_ERROR",
        [("data", NOT_A_DOUBLE)],
    )
    assert _stored(server) == before


def test_data_nested_too_deep_is_refused_alike_over_rest_and_grpc(
    caller: Caller, server: ServerThread
) -> None:
    # The data object is level 1: {"a": 31 arrays} is 32 deep, the deepest allowed.
    deepest = {"a": nested_arrays(31)}
    assert caller.emit("n", deepest)["data"] == deepest
    before = _stored(server)
    too_deep = struct_pb2.Struct()
    too_deep.update({"a": nested_arrays(32)})
    with pytest.raises(grpc.RpcError) as raised:
        request = pb.CreateEventRequest(type="n", data=too_deep)
        caller.stub.CreateEvent(request, metadata=caller.metadata, timeout=10)
    # Deeper than protobuf carries, and deeper than Python recurses: refused all the same.
    beyond = [
        caller.http.post(
            "/api/v1/events",
            content='{"type":"n","data":{"a":' + "[" * depth + "1" + "]" * depth + "}}",
            headers={"content-type": "application/json"},
        )
        for depth in (32, 60, 500)
    ]
    hostile = caller.http.post(
        "/api/v1/events",
        content='{"type":"n","data":{"a":' + "[" * 10_000 + "]" * 10_000 + "}}",
        headers={"content-type": "application/json"},
    )

    assert rpc_error(raised.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        TOO_DEEP,
        "VALIDATION_ERROR",
        [("data", TOO_DEEP)],
    )
    for response in beyond:
        assert_validation_error(response, [(["body", "data"], TOO_DEEP)])
    assert_error(hostile, 400, "BAD_REQUEST", "Malformed JSON in request body")
    assert _stored(server) == before


@pytest.mark.parametrize(
    "body",
    ['{"type":"n","data":{"s":"\\ud800"}}', '{"type":"n","data":{"a":[{"\\udfff":1}]}}'],
)
def test_a_lone_surrogate_in_data_is_refused_as_in_any_string(
    caller: Caller, server: ServerThread, body: str
) -> None:
    # JSON's grammar allows "\ud800", but it is no Unicode text; no protobuf string carries it.
    before = _stored(server)
    response = caller.http.post(
        "/api/v1/events", content=body, headers={"content-type": "application/json"}
    )

    assert_validation_error(
        response, [(["body", "data"], "Value error, must be valid Unicode text")]
    )
    assert _stored(server) == before


def test_data_that_is_not_an_object_is_refused_by_the_shim(caller: Caller) -> None:
    response = caller.http.post("/api/v1/events", json={"type": "n", "data": [1]})

    assert_validation_error(response, [(["body", "data"], "Input should be a valid dictionary")])


INVALID_FILTERS = [
    pytest.param("type", "Order!", TYPE_RULE, id="type"),
    pytest.param("job_id", "job-1", "Invalid job_id: must be a UUID", id="job-id"),
    pytest.param("agent_id", "agent-1", "Invalid agent_id: must be a UUID", id="agent-id"),
    pytest.param("since", "yesterday", SINCE_RULE, id="since-words"),
    pytest.param("since", "2026-04-01T12:00:00", SINCE_RULE, id="since-without-offset"),
    pytest.param("since", "2026-04-01", SINCE_RULE, id="since-date-only"),
    # In UTC these are past year 9999 and before year 1: no time Python holds.
    pytest.param("since", "9999-12-31T23:59:59-01:00", SINCE_RULE, id="since-after-9999"),
    pytest.param("since", "0001-01-01T00:00:00+01:00", SINCE_RULE, id="since-before-1"),
    pytest.param("type", "order\x00", TYPE_RULE, id="type-nul"),
    pytest.param("type", "' OR 1=1 --", TYPE_RULE, id="type-sql"),
    pytest.param("since", "\uff12\uff10\uff12\uff16-04-01T12:00Z", SINCE_RULE, id="since-wide"),
    pytest.param("page_token", "not-a-token", "Invalid page_token", id="page-token"),
    pytest.param("page_size", 0, "Invalid page_size: must be between 1 and 100", id="page-size-0"),
]


@pytest.mark.parametrize(("field", "value", "message"), INVALID_FILTERS)
def test_an_invalid_filter_is_refused_alike_over_rest_and_grpc(
    caller: Caller, field: str, value: Any, message: str
) -> None:
    response = caller.http.get("/api/v1/events", params={field: value})
    with pytest.raises(grpc.RpcError) as raised:
        request = pb.ListEventsRequest(**{field: value})
        caller.stub.ListEvents(request, metadata=caller.metadata, timeout=10)

    assert_validation_error(response, [(["query", field], message)])
    assert rpc_error(raised.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
        "VALIDATION_ERROR",
        [(field, message)],
    )


def test_an_event_id_of_no_known_form_is_invalid_and_an_unknown_one_not_found(
    caller: Caller,
) -> None:
    unknown = f"evt_{uuid.uuid4()}"
    bad = caller.http.get("/api/v1/events/order-1")
    missing = caller.http.get(f"/api/v1/events/{unknown}")
    with pytest.raises(grpc.RpcError) as raised:
        caller.stub.GetEvent(
            pb.GetEventRequest(event_id="order-1"), metadata=caller.metadata, timeout=10
        )

    assert_validation_error(bad, [(["path", "event_id"], NOT_AN_EVENT_ID)])
    assert_error(missing, 404, "NOT_FOUND", f"Event {unknown} not found")
    assert rpc_error(raised.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        NOT_AN_EVENT_ID,
        "VALIDATION_ERROR",
        [("event_id", NOT_AN_EVENT_ID)],
    )
