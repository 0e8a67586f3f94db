"""Self-service API keys over REST and over gRPC through one interface, so every rule is
checked on both and the two can be compared call for call (README, Self-service API keys).

A call's outcome is written as REST writes it: HTTP status, `error.code`, message and the
JSON body; a gRPC call's status and ErrorInfo reason are mapped to those, after checking
that they agree with docs/contract.md §2.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc
import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from agentq.v1 import api_key_service_pb2 as pb
from agentq.v1 import api_key_service_pb2_grpc as pb_grpc
from rest_shim import render
from server.ratelimit import DEFAULT_TIERS, Tier
from tests.e2e.access_helpers import ADMIN_TOKEN, parse_time
from tests.e2e.harness import ServerThread, rpc_error, running_rest, running_server, settings_for

# docs/contract.md §2: the HTTP status and the gRPC status of each error code.
STATUSES = {
    "UNAUTHORIZED": (401, grpc.StatusCode.UNAUTHENTICATED),
    "FORBIDDEN": (403, grpc.StatusCode.PERMISSION_DENIED),
    "NOT_FOUND": (404, grpc.StatusCode.NOT_FOUND),
    "VALIDATION_ERROR": (422, grpc.StatusCode.INVALID_ARGUMENT),
    "RATE_LIMITED": (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
}
TIMEOUT_S = 15
# A key's own tier for the tests of limits: three a minute, whatever the bucket says.
TIERS = {**DEFAULT_TIERS, "three-a-minute": Tier(rate=1000, burst=1000, per_minute=3)}


@dataclass(frozen=True)
class Outcome:
    """What a call answered, as REST says it; `body` is None for an error or a 204."""

    status: int
    code: str = ""
    message: str = ""
    body: Any = None
    headers: dict[str, str] | None = None


def credential_headers(credential: str) -> dict[str, str]:
    """An `agq_` key as X-API-Key, anything else as a bearer token."""
    if credential.startswith("agq_"):
        return {"X-API-Key": credential}
    return {"Authorization": f"Bearer {credential}"}


class Transport(Protocol):
    """One way of calling ApiKeyService."""

    name: str

    def create(self, credential: str, body: dict[str, Any]) -> Outcome: ...

    def list(self, credential: str, **query: Any) -> Outcome: ...

    def delete(self, credential: str, key_id: str) -> Outcome: ...


class Rest:
    """The routes over real HTTP, through the shim."""

    name = "rest"

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def _outcome(self, response: httpx.Response) -> Outcome:
        headers = dict(response.headers)
        if response.status_code >= 400:
            error = response.json()["error"]
            assert error["status"] == response.status_code, error
            return Outcome(response.status_code, error["code"], error["message"], None, headers)
        body = response.json() if response.content else None
        return Outcome(response.status_code, body=body, headers=headers)

    def create(self, credential: str, body: dict[str, Any]) -> Outcome:
        headers = credential_headers(credential)
        return self._outcome(self._client.post("/api/v1/api-keys", json=body, headers=headers))

    def list(self, credential: str, **query: Any) -> Outcome:
        headers = credential_headers(credential)
        response = self._client.get("/api/v1/api-keys", params=query, headers=headers)
        return self._outcome(response)

    def delete(self, credential: str, key_id: str) -> Outcome:
        headers = credential_headers(credential)
        return self._outcome(self._client.delete(f"/api/v1/api-keys/{key_id}", headers=headers))


class Grpc:
    """The RPCs over a real gRPC channel."""

    name = "grpc"

    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = pb_grpc.ApiKeyServiceStub(channel)

    @staticmethod
    def _metadata(credential: str) -> tuple[tuple[str, str], ...]:
        return tuple((k.lower(), v) for k, v in credential_headers(credential).items())

    def _call(self, method: Any, request: Any, credential: str) -> tuple[Any, Outcome]:
        """The reply (None for an error) and the outcome: the error's, else the trailers."""
        try:
            reply, call = method.with_call(
                request, metadata=self._metadata(credential), timeout=TIMEOUT_S
            )
        except grpc.RpcError as error:
            code, message, reason, _ = rpc_error(error)
            status, grpc_code = STATUSES[reason]
            assert code == grpc_code, (code, reason, message)
            return None, Outcome(status, reason, message)
        return reply, Outcome(0, headers=dict(call.trailing_metadata() or ()))

    def create(self, credential: str, body: dict[str, Any]) -> Outcome:
        fields = dict(body)
        if fields.get("expires_at") is not None:
            stamp = Timestamp()
            stamp.FromDatetime(parse_time(fields["expires_at"]))
            fields["expires_at"] = stamp
        fields = {k: v for k, v in fields.items() if v is not None}
        reply, outcome = self._call(self._stub.CreateKey, pb.CreateKeyRequest(**fields), credential)
        if reply is None:
            return outcome
        return Outcome(
            201, body={**render.api_key(reply.api_key), "key": reply.key}, headers=outcome.headers
        )

    def list(self, credential: str, **query: Any) -> Outcome:
        request = pb.ListKeysRequest(**query)
        reply, outcome = self._call(self._stub.ListKeys, request, credential)
        if reply is None:
            return outcome
        meta = {"per_page": reply.page_size, "next_page_token": reply.next_page_token or None}
        body = {"data": [render.api_key(k) for k in reply.api_keys], "meta": meta}
        return Outcome(200, body=body, headers=outcome.headers)

    def delete(self, credential: str, key_id: str) -> Outcome:
        request = pb.DeleteKeyRequest(key_id=key_id)
        reply, outcome = self._call(self._stub.DeleteKey, request, credential)
        return outcome if reply is None else Outcome(204, headers=outcome.headers)


def in_seconds(seconds: float) -> str:
    """An RFC 3339 time this many seconds from now."""
    moment = datetime.fromtimestamp(time.time() + seconds, UTC)
    return moment.isoformat().replace("+00:00", "Z")


def unknown_id() -> str:
    return str(uuid.uuid4())


def clear_of_a_minute_end(margin_s: float = 10) -> None:
    """Wait, if need be, until a new clock minute has begun, so that a test of a minute's
    window does not see the window roll over halfway through.
    """
    into = time.time() % 60
    if into > 60 - margin_s:
        time.sleep(60 - into + 0.1)


# The fixtures of a test module: test modules take them as attributes of their own.
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, httpx.Client]]:
    """The embedded default with the admin API on and TIERS, and a client of its shim."""
    database = f"sqlite:///{tmp_path_factory.mktemp('own-keys') / 'agentq.db'}"
    settings = settings_for(database_url=database, admin_token=ADMIN_TOKEN, rate_tiers=TIERS)
    with (
        running_server(settings, in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
        httpx.Client(base_url=rest.url, timeout=TIMEOUT_S) as client,
    ):
        yield server, client


@pytest.fixture(scope="module")
def server(served: tuple[ServerThread, httpx.Client]) -> ServerThread:
    return served[0]


@pytest.fixture(scope="module")
def http(served: tuple[ServerThread, httpx.Client]) -> httpx.Client:
    return served[1]
