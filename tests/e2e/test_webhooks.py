"""Signed webhooks end to end (README, Webhooks): a real receiver verifying every delivery
with the `standardwebhooks` library gets every event exactly once after de-duplication by
`webhook-id`, including those that happened while it was down; deliveries list their
attempts and codes; retry, rotation, redirects; gRPC and REST reach the same webhooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from agentq.v1 import webhook_service_pb2 as pb
from agentq.v1 import webhook_service_pb2_grpc as pb_grpc
from tests.e2e.harness import (
    ServerThread,
    running_rest,
    running_server,
    settings_for,
    token,
)
from tests.e2e.rest_errors_helpers import VALID_AGENT
from tests.e2e.webhook_helpers import FAST_WEBHOOKS, create_webhook, deliveries
from tests.webhook_receiver import Receiver, running_receiver

TIMEOUT_S = 60


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, httpx.Client]]:
    database = f"sqlite:///{tmp_path_factory.mktemp('webhooks') / 'agentq.db'}"
    headers = {"Authorization": f"Bearer {token('alice')}"}
    with (
        running_server(
            settings_for(database_url=database, **FAST_WEBHOOKS), in_process_workers=True
        ) as s,
        running_rest(f"127.0.0.1:{s.port}") as rest,
        httpx.Client(base_url=rest.url, timeout=TIMEOUT_S, headers=headers) as client,
    ):
        yield s, client


@pytest.fixture(scope="module")
def http(served: tuple[ServerThread, httpx.Client]) -> httpx.Client:
    return served[1]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as started:
        yield started


def _emit(http: httpx.Client, type: str, data: dict[str, Any]) -> str:
    response = http.post("/api/v1/events", json={"type": type, "data": data})
    assert response.status_code == 201, response.text
    event_id: str = response.json()["id"]
    return event_id


def _run_jobs(http: httpx.Client, count: int) -> list[str]:
    agent = http.post("/api/v1/agents", json=VALID_AGENT).json()["id"]
    ids = []
    for _ in range(count):
        response = http.post(f"/api/v1/agents/{agent}/execute", json={"prompt": "What is 2+2?"})
        assert response.status_code == 202, response.text
        ids.append(response.json()["job_id"])
    return ids


def test_a_receiver_down_for_a_while_gets_every_event_exactly_once_after_deduplication(
    http: httpx.Client, receiver: Receiver
) -> None:
    webhook = create_webhook(http, receiver, ["job.completed", "job.failed", "order.created"])
    receiver.down = True
    job_ids = _run_jobs(http, 3)
    emitted = {_emit(http, "order.created", {"order": n}): {"order": n} for n in range(2)}
    ignored = _emit(http, "order.shipped", {})

    # While it is down: every event has its delivery, tried and answered 503.
    def all_tried() -> bool:
        found = deliveries(http, webhook["id"])
        return len(found) == 5 and all(d["last_status_code"] == 503 for d in found)

    receiver.wait_for(all_tried, timeout_s=TIMEOUT_S)
    assert receiver.taken() == []

    receiver.down = False
    receiver.wait_for(lambda: len(receiver.unique()) == 5, timeout_s=TIMEOUT_S)
    receiver.wait_for(
        lambda: all(d["status"] == "succeeded" for d in deliveries(http, webhook["id"])),
        timeout_s=TIMEOUT_S,
    )

    received = receiver.unique()
    assert all(r.verified for r in receiver.taken())
    assert ignored not in received
    # Emitted events: their id is the webhook-id, their data the body's data.
    for event_id, data in emitted.items():
        assert received[event_id]["type"] == "order.created"
        assert received[event_id]["data"] == data
    # Job events: the body's data is the job as GET /api/v1/jobs/{id} answers it.
    jobs = {b["data"]["job_id"]: b for i, b in received.items() if i not in emitted}
    assert set(jobs) == set(job_ids)
    for job_id, body in jobs.items():
        assert body["type"] == "job.completed"
        assert body["data"] == http.get(f"/api/v1/jobs/{job_id}").json()
    # The list says what happened: tried while down, then answered 200.
    for delivery in deliveries(http, webhook["id"]):
        assert delivery["attempts"] >= 2
        assert (delivery["last_status_code"], delivery["last_error"]) == (200, None)
        assert delivery["last_attempt_at"] is not None and delivery["next_attempt_at"] is None
        assert delivery["event_id"] in received


def test_a_retried_delivery_is_sent_again_with_the_same_webhook_id(
    http: httpx.Client, receiver: Receiver
) -> None:
    webhook = create_webhook(http, receiver, ["ping.sent"])
    event_id = _emit(http, "ping.sent", {})
    receiver.wait_for(lambda: len(receiver.taken()) == 1)
    receiver.wait_for(lambda: deliveries(http, webhook["id"])[0]["status"] == "succeeded")
    [delivery] = deliveries(http, webhook["id"])

    retried = http.post(f"/api/v1/webhooks/{webhook['id']}/deliveries/{delivery['id']}/retry")

    assert retried.status_code == 200, retried.text
    assert retried.json()["id"] == delivery["id"]
    receiver.wait_for(lambda: len(receiver.taken()) == 2)
    assert {r.webhook_id for r in receiver.taken()} == {event_id}
    receiver.wait_for(lambda: deliveries(http, webhook["id"])[0]["attempts"] == 2)
    assert deliveries(http, webhook["id"])[0]["status"] == "succeeded"


def test_a_redirect_is_not_followed_and_counts_as_a_failed_attempt(
    http: httpx.Client, receiver: Receiver
) -> None:
    receiver.redirect.add("/moved")
    webhook = create_webhook(http, receiver, ["moved.event"], path="/moved")
    _emit(http, "moved.event", {})

    receiver.wait_for(lambda: deliveries(http, webhook["id"])[0]["attempts"] >= 1)

    [delivery] = deliveries(http, webhook["id"])
    assert (delivery["status"], delivery["last_status_code"]) == ("pending", 302)
    assert delivery["last_error"] == "The receiver answered 302"
    assert receiver.taken() == []


def test_a_rotated_secret_signs_the_nextdeliveries(http: httpx.Client, receiver: Receiver) -> None:
    webhook = create_webhook(http, receiver, ["rotation.checked"])
    old = receiver.secret

    rotated = http.post(f"/api/v1/webhooks/{webhook['id']}/rotate-secret")

    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_") and rotated.json()["secret"] != old
    assert rotated.json()["id"] == webhook["id"]
    receiver.secret = rotated.json()["secret"]
    event_id = _emit(http, "rotation.checked", {})
    receiver.wait_for(lambda: event_id in receiver.unique())


def test_webhooks_are_read_changed_and_deleted_over_rest_and_grpc_alike(
    served: tuple[ServerThread, httpx.Client], http: httpx.Client, receiver: Receiver
) -> None:
    server, _ = served
    webhook = create_webhook(http, receiver, ["a.b"])
    metadata = (("authorization", f"Bearer {token('alice')}"),)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.WebhookServiceStub(channel)
        got = stub.GetWebhook(pb.GetWebhookRequest(webhook_id=webhook["id"]), metadata=metadata)
        changed = stub.UpdateWebhook(
            pb.UpdateWebhookRequest(
                webhook_id=webhook["id"],
                event_types=pb.WebhookEventTypes(types=["c.d", "*"]),
                enabled=False,
            ),
            metadata=metadata,
        )
        listed = stub.ListWebhooks(pb.ListWebhooksRequest(page_size=100), metadata=metadata)

    assert got.webhook.url == webhook["url"] and list(got.webhook.event_types) == ["a.b"]
    assert list(changed.webhook.event_types) == ["c.d", "*"]
    assert changed.webhook.enabled is False
    assert webhook["id"] in [w.id for w in listed.webhooks]
    rest = http.get(f"/api/v1/webhooks/{webhook['id']}").json()
    assert rest == {
        "id": webhook["id"],
        "url": webhook["url"],
        "event_types": ["c.d", "*"],
        "enabled": False,
        "created_at": webhook["created_at"],
        "updated_at": changed.webhook.updated_at.ToJsonString(),
    }
    # Disabled: new events are not delivered.
    _emit(http, "c.d", {})
    assert deliveries(http, webhook["id"]) == []
    patched = http.patch(f"/api/v1/webhooks/{webhook['id']}", json={"enabled": True})
    assert patched.status_code == 200 and patched.json()["event_types"] == ["c.d", "*"]

    assert http.delete(f"/api/v1/webhooks/{webhook['id']}").status_code == 204
    assert http.get(f"/api/v1/webhooks/{webhook['id']}").status_code == 404
