"""ApiKeyService servicer: the caller's own tenant's keys; proto in, one service call, proto out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from agentq.v1 import api_key_service_pb2 as pb
from agentq.v1 import api_key_service_pb2_grpc as pb_grpc
from server.api.admin import key_message
from server.api.context import Context, current_principal
from server.service.services import Services
from server.validation import parse_id

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The last second a Timestamp may hold (9999-12-31T23:59:59Z).
_LAST_SECOND = 253_402_300_799


def _time_of(stamp: Timestamp) -> datetime:
    """The time a Timestamp names; one outside the Timestamp's range is clamped to its end
    (still in the past, or still too far ahead), so the service's rule words the error.
    """
    seconds = min(max(stamp.seconds, 0), _LAST_SECOND)
    micros = min(max(stamp.nanos, 0), 999_999_999) // 1000
    return _EPOCH + timedelta(seconds=seconds, microseconds=micros)


class ApiKeyServicer(pb_grpc.ApiKeyServiceServicer):
    """Self-service API keys (README, Self-service API keys)."""

    def __init__(self, services: Services) -> None:
        self._keys = services.own_keys

    async def CreateKey(
        self, request: pb.CreateKeyRequest, context: Context
    ) -> pb.CreateKeyResponse:
        expires_at = _time_of(request.expires_at) if request.HasField("expires_at") else None
        row, key = await self._keys.create(
            current_principal(),
            name=request.name if request.HasField("name") else None,
            scopes=list(request.scopes),
            expires_at=expires_at,
            tier=request.tier if request.HasField("tier") else None,
        )
        return pb.CreateKeyResponse(api_key=key_message(row), key=key)

    async def ListKeys(self, request: pb.ListKeysRequest, context: Context) -> pb.ListKeysResponse:
        page = await self._keys.list(
            current_principal(),
            size=request.page_size if request.HasField("page_size") else None,
            token=request.page_token,
        )
        return pb.ListKeysResponse(
            api_keys=[key_message(k) for k in page.items],
            page_size=page.size,
            next_page_token=page.next_token or "",
        )

    async def DeleteKey(
        self, request: pb.DeleteKeyRequest, context: Context
    ) -> pb.DeleteKeyResponse:
        await self._keys.revoke(current_principal(), parse_id(request.key_id, "key_id"))
        return pb.DeleteKeyResponse()
