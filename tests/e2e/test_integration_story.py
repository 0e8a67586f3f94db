"""The four features together, as an outside client tries them as a new user would, over
real HTTP against a real server (README: Event log, Webhooks, Workflows, Self-service API
keys): a webhook to a receiver that verifies every delivery with the `standardwebhooks`
library; a three-step workflow, two steps side by side, started by an emitted event; the
receiver down for part of the run and still getting every event exactly once after
de-duplication by `webhook-id`, `workflow.completed` with every step's answer last; a key
with `agents:read` unable to make one with `jobs:write`; the event log telling the whole
story in order; and gRPC answering what REST does (the parity test).

On the embedded default, and scaled out (PostgreSQL, Redis, a server without workers and
an `agentq worker` process that runs the steps and sends the deliveries).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import grpc
import httpx
import pytest

from agentq.v1 import event_service_pb2 as events_pb
from agentq.v1 import event_service_pb2_grpc as events_grpc
from agentq.v1 import webhook_service_pb2 as webhooks_pb
from agentq.v1 import webhook_service_pb2_grpc as webhooks_grpc
from agentq.v1 import workflow_service_pb2 as workflows_pb
from rest_shim.event_routes import event as rendered_event
from rest_shim.webhook_routes import delivery as rendered_delivery
from rest_shim.workflow_routes import run as rendered_run
from tests.e2e.access_helpers import SCOPE_DENIED
from tests.e2e.own_keys_helpers import Grpc, Outcome, Rest
from tests.e2e.rest_helpers import get_job, scaled_rest, worker_processes
from tests.e2e.webhook_helpers import FAST_WEBHOOKS, create_webhook, deliveries
from tests.e2e.workflow_helpers import (
    Stack,
    Tenant,
    job_story,
    position,
    tenant_on,
    three_steps,
    workflow_stack,
)
from tests.webhook_receiver import Receiver, running_receiver

TIMEOUT_S = 60
# Each answer takes a moment, so that the receiver can come back while the run runs.
STORY_SETTINGS = {**FAST_WEBHOOKS, "builtin_latency_ms": 300}
ORDER = {"order": 42}
JOB_STORY = ["job.queued", "job.started", "job.completed"]
CANNOT_GRANT = "Cannot grant scope(s) the caller does not hold: ['jobs:write']"


@pytest.fixture(
    params=["embedded", pytest.param("scaled", marks=[pytest.mark.postgres, pytest.mark.redis])]
)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    if request.param == "embedded":
        with workflow_stack(tmp_path_factory, **STORY_SETTINGS) as embedded:
            yield embedded
        return
    settings = request.getfixturevalue("scaled_settings").model_copy(
        # The orchestrator's sweep as often as workflow_stack's.
        update={**STORY_SETTINGS, "workflow_poll_s": 0.05}
    )
    with scaled_rest(settings) as scaled, worker_processes(settings, count=1, concurrency=4):
        yield scaled


def test_the_whole_story(stack: Stack) -> None:
    with tenant_on(stack, "newcomer") as tenant, running_receiver() as receiver:
        http = tenant.http
        agents = [tenant.agent(f"You are agent {n}.") for n in "RFS"]
        webhook = create_webhook(http, receiver, ["*"])
        workflow = tenant.create(three_steps(*agents))

        # Down before anything happens; back once both parallel steps have answered.
        receiver.down = True
        emitted = http.post("/api/v1/events", json={"type": "order.created", "data": ORDER})
        assert emitted.status_code == 201, emitted.text
        event = emitted.json()
        [started] = http.get(f"/api/v1/workflows/{workflow['id']}/runs").json()["data"]
        assert started["event_id"] == event["id"]
        receiver.wait_for(
            lambda: _summary_queued(tenant, workflow["id"], started["id"]), timeout_s=TIMEOUT_S
        )
        receiver.wait_for(lambda: _refused(http, webhook["id"]), timeout_s=TIMEOUT_S)
        receiver.down = False

        run = tenant.wait_run(workflow["id"], started["id"])
        assert run["status"] == "completed", run
        receiver.wait_for(lambda: "workflow.completed" in _types(receiver), timeout_s=TIMEOUT_S)
        log = tenant.log()
        receiver.wait_for(
            lambda: set(receiver.unique()) == {e["id"] for e in log}, timeout_s=TIMEOUT_S
        )
        receiver.wait_for(
            lambda: all(d["status"] == "succeeded" for d in deliveries(http, webhook["id"])),
            timeout_s=TIMEOUT_S,
        )

        _check_the_answers(http, receiver, run, workflow)
        _check_each_event_arrived_once(http, receiver, log)
        _check_the_deliveries(http, webhook["id"], log)
        _check_the_log_tells_the_story_in_order(log, event, run)
        _check_grpc_answers_what_rest_does(stack, tenant, workflow["id"], run, webhook["id"])
        _check_a_narrow_key_cannot_make_a_wider_one(stack, tenant, agents[0])
        # Nothing of the keys went to the log: the story is still the whole log.
        assert tenant.log() == log


def _summary_queued(tenant: Tenant, workflow_id: str, run_id: str) -> bool:
    steps = tenant.get_run(workflow_id, run_id)["steps"]
    return next(s for s in steps if s["name"] == "summary")["job_id"] is not None


def _refused(http: httpx.Client, webhook_id: str) -> bool:
    return any(d["last_status_code"] == 503 for d in deliveries(http, webhook_id))


def _types(receiver: Receiver) -> set[str]:
    return {body["type"] for body in receiver.unique().values()}


def _check_the_answers(
    http: httpx.Client, receiver: Receiver, run: dict[str, Any], workflow: dict[str, Any]
) -> None:
    """workflow.completed, as received, holds every step's answer: the step jobs' results."""
    [completed] = [b for b in receiver.unique().values() if b["type"] == "workflow.completed"]
    answers = {s["name"]: get_job(http, s["job_id"]) for s in run["steps"]}
    assert all(job["status"] == "completed" for job in answers.values())
    responses = {name: job["result"]["response"] for name, job in answers.items()}
    assert completed["data"] == {
        "run_id": run["id"],
        "workflow_id": workflow["id"],
        "version": 1,
        "status": "completed",
        "steps": responses,
        "response": responses["summary"],
    }
    assert responses["research"] == 'As "You are agent R.": Research order {"order":42}'
    assert responses["facts"] == 'As "You are agent F.": List the facts of {"order":42}'
    assert responses["summary"].startswith('As "You are agent S.": Summarize As "You are agent R."')
    assert get_job(http, run["id"])["result"]["response"] == responses["summary"]


def _check_each_event_arrived_once(
    http: httpx.Client, receiver: Receiver, log: list[dict[str, Any]]
) -> None:
    """Every delivery verified; every event of the log arrived, and a webhook-id seen
    twice is the same delivery sent again, byte for byte the same body."""
    taken = receiver.taken()
    assert [r for r in taken if not r.verified] == []
    by_id: dict[str, list[Any]] = {}
    for request in taken:
        by_id.setdefault(request.webhook_id, []).append(request.body)
    assert all(bodies == bodies[:1] * len(bodies) for bodies in by_id.values())
    received = receiver.unique()
    assert list(received) == list(by_id) and len(received) == len(log)
    for event in log:
        body = received[event["id"]]
        assert body["type"] == event["type"], (event, body)
        # Standard Webhooks' timestamp is the event's time.
        sent_at, happened_at = body["timestamp"], event["created_at"]
        assert datetime.fromisoformat(sent_at) == datetime.fromisoformat(happened_at), event
        if event["job_id"] is None:
            assert body["data"] == event["data"]
        else:
            assert body["data"]["job_id"] == event["job_id"]
            if event["type"] == "job.completed":
                assert body["data"] == get_job(http, event["job_id"])


def _check_the_deliveries(http: httpx.Client, webhook_id: str, log: list[dict[str, Any]]) -> None:
    """One delivery for each event; each succeeded, some only after the outage."""
    found = deliveries(http, webhook_id)
    assert sorted((d["event_id"], d["event_type"]) for d in found) == sorted(
        (e["id"], e["type"]) for e in log
    )
    assert {(d["status"], d["last_status_code"], d["last_error"]) for d in found} == {
        ("succeeded", 200, None)
    }
    [first] = [d for d in found if d["event_id"] == log[0]["id"]]
    assert first["attempts"] >= 2


def _check_the_log_tells_the_story_in_order(
    log: list[dict[str, Any]], event: dict[str, Any], run: dict[str, Any]
) -> None:
    """Oldest first: the emitted event, the run's and its steps' job events, each job's
    in order, the last step after both others, and workflow.completed last."""
    steps = {s["name"]: s["job_id"] for s in run["steps"]}
    jobs = [run["id"], *steps.values()]
    assert log[0] == event
    assert log[-1]["type"] == "workflow.completed"
    assert log[-1]["data"]["run_id"] == run["id"]
    assert {e["job_id"] for e in log[1:-1]} == set(jobs)
    for job_id in jobs:
        assert [t for t in job_story(log, job_id) if t != "job.step"] == JOB_STORY, job_id
    # The emitted event, the run's queued and started and its first steps' queued are
    # one transaction's, at one time: the log orders them by id, so the emitted one comes
    # first (`evt_` before `job_`), the jobs' among themselves as their ids fall.
    for job_id in steps.values():
        assert position(log, job_id, "job.completed") < position(log, run["id"], "job.completed")
    research, facts, summary = steps["research"], steps["facts"], steps["summary"]
    # Side by side: each of the two first steps started before the other completed.
    assert position(log, research, "job.started") < position(log, facts, "job.completed")
    assert position(log, facts, "job.started") < position(log, research, "job.completed")
    # The last step is queued, and so starts, only once both have completed.
    done = max(position(log, j, "job.completed") for j in (research, facts))
    assert done < position(log, summary, "job.queued") < position(log, summary, "job.started")


def _check_grpc_answers_what_rest_does(
    stack: Stack, tenant: Tenant, workflow_id: str, run: dict[str, Any], webhook_id: str
) -> None:
    """The same story read over gRPC, rendered as the shim renders it, is REST's."""
    http, metadata = tenant.http, tenant.metadata
    with grpc.insecure_channel(f"127.0.0.1:{stack[0].port}") as channel:
        listed, token = [], ""
        while True:
            page = events_grpc.EventServiceStub(channel).ListEvents(
                events_pb.ListEventsRequest(page_size=5, page_token=token), metadata=metadata
            )
            listed += [rendered_event(e) for e in page.events]
            if not (token := page.next_page_token):
                break
        sent = webhooks_grpc.WebhookServiceStub(channel).ListWebhookDeliveries(
            webhooks_pb.ListWebhookDeliveriesRequest(webhook_id=webhook_id, page_size=100),
            metadata=metadata,
        )
    read = tenant.stub.GetWorkflowRun(
        workflows_pb.GetWorkflowRunRequest(workflow_id=workflow_id, run_id=run["id"]),
        metadata=metadata,
    ).run
    assert listed[::-1] == tenant.log()
    assert [rendered_delivery(d) for d in sent.deliveries] == deliveries(http, webhook_id)
    assert rendered_run(read) == tenant.get_run(workflow_id, run["id"]) == run


def _error(outcome: Outcome) -> tuple[int, str, str]:
    return outcome.status, outcome.code, outcome.message


def _check_a_narrow_key_cannot_make_a_wider_one(stack: Stack, tenant: Tenant, agent: str) -> None:
    """Keys made by the new user: one with `agents:read` is refused a key with
    `jobs:write` for lack of `keys:write`; one that also holds `keys:write`, for not
    holding `jobs:write`; alike over REST and gRPC, and nothing is stored."""
    jwt = tenant.metadata[0][1].removeprefix("Bearer ")
    with (
        httpx.Client(base_url=stack[1].url, timeout=TIMEOUT_S) as anonymous,
        grpc.insecure_channel(f"127.0.0.1:{stack[0].port}") as channel,
    ):
        rest, over_grpc = Rest(anonymous), Grpc(channel)
        reader = rest.create(jwt, {"scopes": ["agents:read"], "name": "reader"})
        maker = rest.create(jwt, {"scopes": ["agents:read", "keys:write"], "name": "maker"})
        assert (reader.status, maker.status) == (201, 201), (reader, maker)
        read = anonymous.get(f"/api/v1/agents/{agent}", headers={"X-API-Key": reader.body["key"]})
        assert read.status_code == 200, read.text
        wider = {"scopes": ["jobs:write"]}
        for transport in (rest, over_grpc):
            for key, message in ((reader, SCOPE_DENIED), (maker, CANNOT_GRANT)):
                refused = transport.create(key.body["key"], wider)
                assert _error(refused) == (403, "FORBIDDEN", message), transport.name
        keys = rest.list(jwt).body["data"]
    assert [k["name"] for k in keys] == ["maker", "reader"]
