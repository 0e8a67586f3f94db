"""Forged page tokens on PostgreSQL: INVALID_ARGUMENT, never a driver error."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable

import grpc
import pytest

from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import agent_service_pb2_grpc as agents_grpc
from server.bootstrap import page_token_key
from server.settings import Settings
from tests.e2e.harness import running_server, token


def _unsigned(payload: bytes, settings: Settings) -> str:
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def _signed(payload: bytes, settings: Settings) -> str:
    # Signed with the servers' own key: the payload itself must still be refused.
    key = page_token_key(settings)
    assert key is not None
    tag = hmac.new(key, payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(tag + payload).decode().rstrip("=")


@pytest.mark.parametrize("seal", [_unsigned, _signed], ids=["unsigned", "signed"])
def test_a_page_token_with_a_nul_in_its_id_is_invalid_on_postgres(
    scaled_settings: Settings, seal: Callable[[bytes, Settings], str]
) -> None:
    fingerprint = hashlib.sha256(b"agents:alice").hexdigest()[:16]
    body = {"at": "2025-01-06T09:00:00+00:00", "id": "0b7c2d56\x00", "s": fingerprint}
    with (
        running_server(scaled_settings, in_process_workers=False) as server,
        server.client(token()) as client,
    ):
        client.create_agent()
        stub = agents_grpc.AgentServiceStub(client.channel)
        page_token = seal(json.dumps(body).encode(), scaled_settings)
        request = agents_pb.ListAgentsRequest(page_token=page_token)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ListAgents(request, metadata=client.metadata, timeout=10)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == "Invalid page_token"
