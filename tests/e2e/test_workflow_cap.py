"""An emitted event that would start a run at the tenant's cap of unfinished jobs is
refused over REST and gRPC alike, and stores nothing (README, Workflows: A run)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2

from agentq.v1 import event_service_pb2 as events_pb
from agentq.v1 import event_service_pb2_grpc as events_grpc
from tests.e2e.harness import rpc_error
from tests.e2e.rest_errors_helpers import assert_error
from tests.e2e.workflow_helpers import Stack, Tenant, three_steps

# A cap of 0 admits no unfinished job at all: any run an event would start is refused.
WORKFLOW_SETTINGS = {"max_unfinished_jobs": 0}
CAPPED = "Too many unfinished jobs: the limit is 0 per tenant"


def test_an_event_that_would_start_a_run_at_the_cap_is_a_429_and_stores_nothing(
    workflow_server: Stack, tenant: Tenant
) -> None:
    agent = tenant.agent()
    tenant.create(three_steps(agent, agent, agent))
    response = tenant.http.post("/api/v1/events", json={"type": "order.created", "data": {}})
    assert_error(response, 429, "RATE_LIMITED", CAPPED)
    assert response.headers["Retry-After"]
    server, _ = workflow_server
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = events_grpc.EventServiceStub(channel)
        request = events_pb.CreateEventRequest(type="order.created", data=struct_pb2.Struct())
        with pytest.raises(grpc.RpcError) as error:
            stub.CreateEvent(request, metadata=tenant.metadata)
    code, message, _, _ = rpc_error(error.value)
    assert (code, message) == (grpc.StatusCode.RESOURCE_EXHAUSTED, CAPPED)
    listed = tenant.http.get("/api/v1/events", params={"type": "order.created"})
    assert listed.json()["data"] == []
    # An event that starts no run is never refused by the cap.
    shipped = tenant.http.post("/api/v1/events", json={"type": "order.shipped", "data": {}})
    assert shipped.status_code == 201, shipped.text
