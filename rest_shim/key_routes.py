"""Self-service API keys (README, Self-service API keys): each route one ApiKeyService RPC."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi.responses import Response
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from agentq.v1 import api_key_service_pb2 as pb
from rest_shim import render, rules
from rest_shim.routes import _AUTHED, _BODY, _SECURED, PageSize, PageToken, int32
from rest_shim.rules import documented
from rest_shim.schemas import ApiKeyPage, CreatedApiKeyOut, StrictStr
from rest_shim.table import RouteTable

KEYS = RouteTable()


def _text(value: Any) -> Any:
    # Strict like every field (docs/contract.md §3): a time is an RFC 3339 string, never a
    # number of seconds.
    if value is not None and not isinstance(value, str):
        raise PydanticCustomError("string_type", "Input should be a valid string")
    return value


class CreateKeyBody(BaseModel):
    """POST /api/v1/api-keys: a key of the caller's tenant, with the caller's role."""

    name: Annotated[
        StrictStr | None, documented(rules.trimmed(1, rules.MAX_KEY_NAME_CHARS), nullable=True)
    ] = Field(None, description="1-100 characters after trimming; the key's prefix if omitted.")
    scopes: Annotated[list[StrictStr], documented(rules.scopes())] = Field(
        description="At least one scope, each held by the caller itself."
    )
    expires_at: Annotated[AwareDatetime | None, BeforeValidator(_text)] = Field(
        None, description="RFC 3339, in the future; null for a key that never expires."
    )
    tier: Annotated[
        StrictStr | None, documented(rules.one_of(rules.DEFAULT_TIERS), nullable=True)
    ] = Field(None, description="A rate-limit tier of the key's own, besides its tenant's.")


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        # An offset can carry a time past year 9999 (or before year 1) in UTC, where no
        # timestamp reaches: it is the last (first) one, which the server's rules judge.
        utc = (datetime.max if value.year == datetime.max.year else datetime.min).replace(
            tzinfo=UTC
        )
    stamp = Timestamp()
    stamp.FromDatetime(utc)
    return stamp


@KEYS.route(
    "POST",
    "/api/v1/api-keys",
    rpc="ApiKeyService.CreateKey",
    status=201,
    render=render.created_api_key,
    response_model=CreatedApiKeyOut,
    errors=(*_AUTHED, *_BODY),
    credentials=_SECURED,
    tag="api-keys",
)
def create_key(body: CreateKeyBody) -> pb.CreateKeyRequest:
    """Create a key for your tenant (scope `keys:write`); the response is the only time
    the key is shown. Its scopes must be ones you hold yourself.
    """
    return pb.CreateKeyRequest(
        name=body.name,
        scopes=body.scopes,
        expires_at=_timestamp(body.expires_at),
        tier=body.tier,
    )


@KEYS.route(
    "GET",
    "/api/v1/api-keys",
    rpc="ApiKeyService.ListKeys",
    render=render.api_key_page,
    response_model=ApiKeyPage,
    errors=(*_AUTHED, 422),
    credentials=_SECURED,
    tag="api-keys",
)
def list_keys(page_size: PageSize = None, page_token: PageToken = "") -> pb.ListKeysRequest:
    """Your tenant's keys (metadata, never the key), newest first, paged (scope `keys:write`)."""
    return pb.ListKeysRequest(
        page_size=None if page_size is None else int32(page_size), page_token=page_token
    )


@KEYS.route(
    "DELETE",
    "/api/v1/api-keys/{key_id}",
    rpc="ApiKeyService.DeleteKey",
    status=204,
    render=None,
    response_class=Response,
    errors=(*_AUTHED, 404, 422),
    credentials=_SECURED,
    tag="api-keys",
)
def delete_key(key_id: uuid.UUID) -> pb.DeleteKeyRequest:
    """Revoke one of your tenant's keys (scope `keys:write`); refused from the next request."""
    return pb.DeleteKeyRequest(key_id=str(key_id))
