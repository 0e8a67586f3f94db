"""Every rule of webhooks, over REST and over gRPC alike: exact status, code and message,
and nothing stored by a refused request (README, Webhooks). The server here allows no
private address: loopback, private, link-local and metadata addresses are refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, Protocol

import grpc
import httpx
import pytest
from sqlalchemy import text

from agentq.v1 import webhook_service_pb2 as pb
from agentq.v1 import webhook_service_pb2_grpc as pb_grpc
from tests.e2e.harness import (
    ServerThread,
    rpc_error,
    running_rest,
    running_server,
    settings_for,
    token,
)
from tests.e2e.own_keys_helpers import STATUSES, Outcome

HTTPS = "Invalid url: must be an https URL of at most 2000 characters"
REFUSED = (
    "Invalid url: its host resolves to a refused address "
    "(loopback, private, link-local, multicast, reserved or cloud metadata)"
)
COUNT = "Invalid event_types: must be 1 to 50 event types"
TYPE = "Invalid event_types: each must be '*' or 1 to 100 characters of a-z0-9._-"
# A public address, written as one: no name to resolve. No dispatcher runs here.
PUBLIC = "https://8.8.8.8/hook"
TIMEOUT_S = 15


class Transport(Protocol):
    def create(self, who: str, body: dict[str, Any]) -> Outcome: ...

    def update(self, who: str, webhook_id: str, body: dict[str, Any]) -> Outcome: ...

    def get(self, who: str, webhook_id: str) -> Outcome: ...

    def delete(self, who: str, webhook_id: str) -> Outcome: ...

    def rotate(self, who: str, webhook_id: str) -> Outcome: ...

    def deliveries(self, who: str, webhook_id: str) -> Outcome: ...

    def retry(self, who: str, webhook_id: str, delivery_id: int) -> Outcome: ...


class Rest:
    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def _send(self, who: str, method: str, path: str, body: Any = None) -> Outcome:
        headers = {"Authorization": f"Bearer {who}"}
        response = self._client.request(method, path, json=body, headers=headers)
        if response.status_code >= 400:
            error = response.json()["error"]
            return Outcome(response.status_code, error["code"], error["message"])
        return Outcome(response.status_code, body=response.json() if response.content else None)

    def create(self, who: str, body: dict[str, Any]) -> Outcome:
        return self._send(who, "POST", "/api/v1/webhooks", body)

    def update(self, who: str, webhook_id: str, body: dict[str, Any]) -> Outcome:
        return self._send(who, "PATCH", f"/api/v1/webhooks/{webhook_id}", body)

    def get(self, who: str, webhook_id: str) -> Outcome:
        return self._send(who, "GET", f"/api/v1/webhooks/{webhook_id}")

    def delete(self, who: str, webhook_id: str) -> Outcome:
        return self._send(who, "DELETE", f"/api/v1/webhooks/{webhook_id}")

    def rotate(self, who: str, webhook_id: str) -> Outcome:
        return self._send(who, "POST", f"/api/v1/webhooks/{webhook_id}/rotate-secret")

    def deliveries(self, who: str, webhook_id: str) -> Outcome:
        return self._send(who, "GET", f"/api/v1/webhooks/{webhook_id}/deliveries")

    def retry(self, who: str, webhook_id: str, delivery_id: int) -> Outcome:
        path = f"/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"
        return self._send(who, "POST", path)


class Grpc:
    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = pb_grpc.WebhookServiceStub(channel)

    def _call(self, method: Any, request: Any, who: str, status: int = 200) -> Outcome:
        try:
            reply = method(request, metadata=(("authorization", f"Bearer {who}"),), timeout=15)
        except grpc.RpcError as error:
            code, message, reason, _ = rpc_error(error)
            http_status, grpc_code = STATUSES[reason]
            assert code == grpc_code, (code, reason, message)
            return Outcome(http_status, reason, message)
        return Outcome(status, body=reply)

    def create(self, who: str, body: dict[str, Any]) -> Outcome:
        return self._call(self._stub.CreateWebhook, pb.CreateWebhookRequest(**body), who, 201)

    def update(self, who: str, webhook_id: str, body: dict[str, Any]) -> Outcome:
        fields = dict(body)
        if "event_types" in fields:
            fields["event_types"] = pb.WebhookEventTypes(types=fields["event_types"])
        request = pb.UpdateWebhookRequest(webhook_id=webhook_id, **fields)
        return self._call(self._stub.UpdateWebhook, request, who)

    def get(self, who: str, webhook_id: str) -> Outcome:
        return self._call(self._stub.GetWebhook, pb.GetWebhookRequest(webhook_id=webhook_id), who)

    def delete(self, who: str, webhook_id: str) -> Outcome:
        request = pb.DeleteWebhookRequest(webhook_id=webhook_id)
        return self._call(self._stub.DeleteWebhook, request, who, 204)

    def rotate(self, who: str, webhook_id: str) -> Outcome:
        request = pb.RotateWebhookSecretRequest(webhook_id=webhook_id)
        return self._call(self._stub.RotateWebhookSecret, request, who)

    def deliveries(self, who: str, webhook_id: str) -> Outcome:
        request = pb.ListWebhookDeliveriesRequest(webhook_id=webhook_id)
        return self._call(self._stub.ListWebhookDeliveries, request, who)

    def retry(self, who: str, webhook_id: str, delivery_id: int) -> Outcome:
        request = pb.RetryWebhookDeliveryRequest(webhook_id=webhook_id, delivery_id=delivery_id)
        return self._call(self._stub.RetryWebhookDelivery, request, who)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, httpx.Client]]:
    database = f"sqlite:///{tmp_path_factory.mktemp('webhook-errors') / 'agentq.db'}"
    with (
        running_server(settings_for(database_url=database), in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
        httpx.Client(base_url=rest.url, timeout=TIMEOUT_S) as client,
    ):
        yield server, client


@pytest.fixture(scope="module", params=["rest", "grpc"])
def transport(
    request: pytest.FixtureRequest, served: tuple[ServerThread, httpx.Client]
) -> Iterator[Transport]:
    server, client = served
    if request.param == "rest":
        yield Rest(client)
        return
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield Grpc(channel)


ALICE = token("alice", tenant="alice")
BOB = token("bob", tenant="bob")
AGENT = token("robot", role="agent", tenant="alice")


def _stored(served: tuple[ServerThread, httpx.Client]) -> int:
    with served[0].engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM webhooks")).scalar_one())


def _refused(outcome: Outcome, status: int, code: str, message: str) -> None:
    assert (outcome.status, outcome.code, outcome.message) == (status, code, message), outcome


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://8.8.8.8/hook", HTTPS),
        ("https://", HTTPS),
        ("ftp://8.8.8.8/", HTTPS),
        ("https://user:pw@8.8.8.8/", HTTPS),
        ("https://8.8.8.8:99999/", HTTPS),
        ("https://8.8.8.8/" + "a" * 1990, HTTPS),
        ("https://127.0.0.1/hook", REFUSED),
        ("https://localhost/hook", REFUSED),
        ("https://10.1.2.3/hook", REFUSED),
        ("https://192.168.0.1/hook", REFUSED),
        ("https://169.254.169.254/latest/meta-data", REFUSED),
        ("https://[::1]/hook", REFUSED),
        ("https://[fd00:ec2::254]/", REFUSED),
        ("https://[::ffff:127.0.0.1]/", REFUSED),
        ("https://0.0.0.0/", REFUSED),
        ("https://224.0.0.1/", REFUSED),
        ("HTTPS://8.8.8.8/", HTTPS),
        # Control characters: PostgreSQL refuses NUL in text, and no request carries them.
        ("https://8.8.8.8/a\x00b", HTTPS),
        ("https://8.8.8.8/a\x7fb", HTTPS),
        ("https://8.8.8.8/a\x1bb", HTTPS),
        ("https://evil.example@127.0.0.1/", HTTPS),
        ("https://127.0.0.1#@evil.example/", REFUSED),
        ("https://2130706433/", REFUSED),
        ("https://0177.0.0.1/", REFUSED),
        ("https://0x7f.1/", REFUSED),
        ("https://[::]/", REFUSED),
        # IPv6 forms carrying 127.0.0.1: IPv4-compatible, NAT64 and 6to4.
        ("https://[::127.0.0.1]/", REFUSED),
        ("https://[64:ff9b::7f00:1]/", REFUSED),
        ("https://[2002:7f00:1::]/", REFUSED),
    ],
)
def test_a_url_breaking_its_rule_is_refused_and_nothing_is_stored(
    served: tuple[ServerThread, httpx.Client], transport: Transport, url: str, message: str
) -> None:
    before = _stored(served)
    outcome = transport.create(ALICE, {"url": url, "event_types": ["*"]})
    _refused(outcome, 422, "VALIDATION_ERROR", message)
    assert _stored(served) == before


@pytest.mark.parametrize(
    ("types", "message"),
    [
        ([], COUNT),
        ([f"t{n}" for n in range(51)], COUNT),
        (["Job.Completed"], TYPE),
        (["a" * 101], TYPE),
        (["ok", ""], TYPE),
        (["**"], TYPE),
    ],
)
def test_event_types_breaking_their_rule_are_refused(
    served: tuple[ServerThread, httpx.Client],
    transport: Transport,
    types: list[str],
    message: str,
) -> None:
    before = _stored(served)
    _refused(
        transport.create(ALICE, {"url": PUBLIC, "event_types": types}),
        422,
        "VALIDATION_ERROR",
        message,
    )
    assert _stored(served) == before


def test_fifty_types_and_a_public_url_are_accepted(transport: Transport) -> None:
    types = ["*", "a" * 100, *[f"t.{n}" for n in range(48)]]
    created = transport.create(ALICE, {"url": PUBLIC, "event_types": types})
    assert created.status == 201, created


def test_a_change_breaking_a_rule_changes_nothing(transport: Transport) -> None:
    created = transport.create(ALICE, {"url": PUBLIC, "event_types": ["a.b"]})
    webhook_id = _id(created)

    _refused(
        transport.update(ALICE, webhook_id, {"url": "https://127.0.0.1/"}),
        422,
        "VALIDATION_ERROR",
        REFUSED,
    )
    _refused(
        transport.update(ALICE, webhook_id, {"event_types": []}), 422, "VALIDATION_ERROR", COUNT
    )

    got = transport.get(ALICE, webhook_id)
    assert _field(got, "url") == PUBLIC and _field(got, "event_types") == ["a.b"]


def test_another_tenants_webhook_and_an_unknown_one_are_not_found(transport: Transport) -> None:
    webhook_id = _id(transport.create(ALICE, {"url": PUBLIC, "event_types": ["a.b"]}))
    unknown = str(uuid.uuid4())
    for who, target in ((BOB, webhook_id), (ALICE, unknown)):
        message = f"Webhook {target} not found"
        _refused(transport.get(who, target), 404, "NOT_FOUND", message)
        _refused(transport.update(who, target, {"enabled": False}), 404, "NOT_FOUND", message)
        _refused(transport.rotate(who, target), 404, "NOT_FOUND", message)
        _refused(transport.deliveries(who, target), 404, "NOT_FOUND", message)
        _refused(transport.retry(who, target, 1), 404, "NOT_FOUND", message)
        _refused(transport.delete(who, target), 404, "NOT_FOUND", message)
    assert transport.get(ALICE, webhook_id).status == 200


def test_ids_breaking_their_rule_are_refused(transport: Transport) -> None:
    bad = "Invalid webhook_id: must be a UUID"
    _refused(transport.get(ALICE, "not-a-uuid"), 422, "VALIDATION_ERROR", bad)
    _refused(transport.delete(ALICE, "not-a-uuid"), 422, "VALIDATION_ERROR", bad)
    webhook_id = _id(transport.create(ALICE, {"url": PUBLIC, "event_types": ["a.b"]}))
    positive = "Invalid delivery_id: must be a positive number"
    _refused(transport.retry(ALICE, webhook_id, 0), 422, "VALIDATION_ERROR", positive)
    _refused(
        transport.retry(ALICE, webhook_id, 12345), 404, "NOT_FOUND", "Delivery 12345 not found"
    )


def test_an_agent_may_read_webhooks_but_not_change_them(transport: Transport) -> None:
    webhook_id = _id(transport.create(ALICE, {"url": PUBLIC, "event_types": ["a.b"]}))
    denied = "Insufficient permissions"
    _refused(
        transport.create(AGENT, {"url": PUBLIC, "event_types": ["a.b"]}), 403, "FORBIDDEN", denied
    )
    _refused(transport.delete(AGENT, webhook_id), 403, "FORBIDDEN", denied)
    _refused(transport.update(AGENT, webhook_id, {"enabled": False}), 403, "FORBIDDEN", denied)
    _refused(transport.rotate(AGENT, webhook_id), 403, "FORBIDDEN", denied)
    _refused(transport.retry(AGENT, webhook_id, 1), 403, "FORBIDDEN", denied)
    assert transport.get(AGENT, webhook_id).status == 200
    assert transport.deliveries(AGENT, webhook_id).status == 200


def _field(outcome: Outcome, name: str) -> Any:
    body = outcome.body
    if isinstance(body, dict):
        return body[name]
    value = getattr(body.webhook, name)
    return list(value) if name == "event_types" else value


def _id(outcome: Outcome) -> str:
    assert outcome.status == 201, outcome
    webhook_id: str = _field(outcome, "id")
    return webhook_id
