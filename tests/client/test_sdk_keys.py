"""API keys: the client exchanges one for JWTs, renews them before they expire, and stops
at once when the key is revoked. Against a real server with a short token lifetime."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import jwt
import pytest

from agentq.client import Client, PermissionDenied, Unauthenticated
from agentq.v1 import admin_service_pb2 as admin_pb
from agentq.v1 import admin_service_pb2_grpc as admin_grpc
from tests.client.conftest import ADMIN_TOKEN, sqlite_server
from tests.e2e.harness import ServerThread

TOKEN_TTL_S = 2
ALL_SCOPES = ["agents:read", "agents:write", "jobs:read", "jobs:write"]


@pytest.fixture(scope="module")
def short_tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server whose exchanged tokens live two seconds."""
    started = sqlite_server(
        tmp_path_factory.mktemp("keys"), admin_token=ADMIN_TOKEN, token_ttl_s=TOKEN_TTL_S
    )
    yield started
    started.stop()


def _admin(server: ServerThread) -> admin_grpc.AdminServiceStub:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    return admin_grpc.AdminServiceStub(channel)


def _key(server: ServerThread, scopes: list[str]) -> admin_pb.CreateApiKeyResponse:
    request = admin_pb.CreateApiKeyRequest(tenant_id="acme", name="sdk", role="user", scopes=scopes)
    metadata = (("x-admin-api-key", ADMIN_TOKEN),)
    reply: admin_pb.CreateApiKeyResponse = _admin(server).CreateApiKey(
        request, metadata=metadata, timeout=10
    )
    return reply


def _claims(client: Client) -> dict[str, object]:
    assert client.credentials.exchanged is not None
    decoded: dict[str, object] = jwt.decode(
        client.credentials.exchanged.access_token, options={"verify_signature": False}
    )
    return decoded


def test_an_api_key_is_exchanged_for_a_jwt_and_renewed_before_it_expires(
    short_tokens: ServerThread,
) -> None:
    created = _key(short_tokens, ALL_SCOPES)
    with Client(f"127.0.0.1:{short_tokens.port}", api_key=created.key) as client:
        agent = client.agents.create(name="keyed", role="You answer briefly.")
        first = _claims(client)
        tokens = {client.credentials.exchanged.access_token}  # type: ignore[union-attr]
        for _ in range(3):
            time.sleep(TOKEN_TTL_S * 0.5)
            assert client.agents.get(agent.id).id == agent.id
            claims = _claims(client)
            assert int(claims["exp"]) > time.time()  # type: ignore[call-overload]
            tokens.add(client.credentials.exchanged.access_token)  # type: ignore[union-attr]

    assert first["agentq_key_id"] == created.api_key.id
    assert first["tenant_id"] == "acme"
    assert int(first["exp"]) - int(first["iat"]) == TOKEN_TTL_S  # type: ignore[call-overload]
    # Three calls over three seconds of two-second tokens: renewed at least once, never late.
    assert len(tokens) >= 2


def test_a_key_without_the_scope_is_permission_denied(short_tokens: ServerThread) -> None:
    created = _key(short_tokens, ["agents:read"])
    with Client(f"127.0.0.1:{short_tokens.port}", api_key=created.key) as client:
        assert isinstance(list(client.agents.list()), list)
        with pytest.raises(PermissionDenied) as raised:
            client.agents.create(name="keyed", role="You answer briefly.")

    assert raised.value.message == "Token scope not authorized for this endpoint"


def test_a_revoked_key_is_refused_with_its_exchanged_token(short_tokens: ServerThread) -> None:
    created = _key(short_tokens, ALL_SCOPES)
    with Client(f"127.0.0.1:{short_tokens.port}", api_key=created.key) as client:
        list(client.agents.list())
        _admin(short_tokens).RevokeApiKey(
            admin_pb.RevokeApiKeyRequest(key_id=created.api_key.id),
            metadata=(("x-admin-api-key", ADMIN_TOKEN),),
            timeout=10,
        )
        with pytest.raises(Unauthenticated) as raised:
            list(client.agents.list())

    assert raised.value.message == "Invalid API key"


def test_an_unknown_key_is_refused_at_the_exchange(short_tokens: ServerThread) -> None:
    unknown = "agq_" + "x" * 43
    with (
        Client(f"127.0.0.1:{short_tokens.port}", api_key=unknown) as client,
        pytest.raises(Unauthenticated) as raised,
    ):
        list(client.agents.list())

    assert raised.value.message == "Invalid API key"
    assert client.credentials.exchanged is None
