"""The operator's routes (/admin/...) and the token exchange, each one RPC."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends
from fastapi.responses import Response
from fastapi.security import APIKeyHeader

from agentq.v1 import admin_service_pb2 as admin_pb
from agentq.v1 import token_service_pb2 as token_pb
from rest_shim import render, rules
from rest_shim.routes import int32, int64
from rest_shim.rules import documented
from rest_shim.schemas import (
    ApiKeyList,
    CreateApiKeyBody,
    CreatedApiKeyOut,
    TenantLimitsBody,
    TenantLimitsOut,
    TokenOut,
)
from rest_shim.table import RouteTable

# Document the headers; the server alone checks them.
admin_header = APIKeyHeader(name="X-Admin-API-Key", scheme_name="AdminApiKey", auto_error=False)
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
_ADMIN = (Depends(admin_header),)
Tenant = Annotated[str, documented(rules.tenant_id())]

ADMIN = RouteTable()


@ADMIN.route(
    "POST",
    "/admin/api-keys",
    rpc="AdminService.CreateApiKey",
    status=201,
    render=render.created_api_key,
    response_model=CreatedApiKeyOut,
    errors=(403, 431, 400, 413, 415, 422, 503, 504),
    credentials=_ADMIN,
    tag="admin",
)
def create_api_key(body: CreateApiKeyBody) -> admin_pb.CreateApiKeyRequest:
    """Create an API key; the response is the only time the key is shown."""
    lifetime = body.lifetime_seconds
    return admin_pb.CreateApiKeyRequest(
        tenant_id=body.tenant_id,
        name=body.name,
        role=body.role,
        scopes=body.scopes,
        lifetime_seconds=None if lifetime is None else int64(lifetime),
        tier=body.tier,
    )


@ADMIN.route(
    "GET",
    "/admin/api-keys",
    rpc="AdminService.ListApiKeys",
    render=render.api_keys,
    response_model=ApiKeyList,
    errors=(403, 431, 422, 503, 504),
    credentials=_ADMIN,
    tag="admin",
)
def list_api_keys(
    tenant_id: Annotated[str | None, documented(rules.tenant_id())] = None,
) -> admin_pb.ListApiKeysRequest:
    """List API keys (metadata only), newest first."""
    return admin_pb.ListApiKeysRequest(tenant_id=tenant_id)


@ADMIN.route(
    "DELETE",
    "/admin/api-keys/{key_id}",
    rpc="AdminService.RevokeApiKey",
    status=204,
    render=None,
    response_class=Response,
    errors=(403, 431, 404, 422, 503, 504),
    credentials=_ADMIN,
    tag="admin",
)
def revoke_api_key(key_id: uuid.UUID) -> admin_pb.RevokeApiKeyRequest:
    """Revoke an API key; every server refuses it from the next request on."""
    return admin_pb.RevokeApiKeyRequest(key_id=str(key_id))


@ADMIN.route(
    "PUT",
    "/admin/tenants/{tenant_id}/limits",
    rpc="AdminService.SetTenantLimits",
    render=lambda reply: render.limits(reply.limits),
    response_model=TenantLimitsOut,
    errors=(403, 431, 400, 413, 415, 422, 503, 504),
    credentials=_ADMIN,
    tag="admin",
)
def set_tenant_limits(tenant_id: Tenant, body: TenantLimitsBody) -> admin_pb.SetTenantLimitsRequest:
    """Set a tenant's rate-limit tier and cap on unfinished jobs."""
    cap = body.max_unfinished_jobs
    return admin_pb.SetTenantLimitsRequest(
        tenant_id=tenant_id, tier=body.tier, max_unfinished_jobs=None if cap is None else int32(cap)
    )


@ADMIN.route(
    "GET",
    "/admin/tenants/{tenant_id}/limits",
    rpc="AdminService.GetTenantLimits",
    render=lambda reply: render.limits(reply.limits),
    response_model=TenantLimitsOut,
    errors=(403, 431, 422, 503, 504),
    credentials=_ADMIN,
    tag="admin",
)
def get_tenant_limits(tenant_id: Tenant) -> admin_pb.GetTenantLimitsRequest:
    """The limits in force for a tenant."""
    return admin_pb.GetTenantLimitsRequest(tenant_id=tenant_id)


@ADMIN.route(
    "POST",
    "/api/v1/tokens",
    rpc="TokenService.CreateToken",
    render=render.token,
    response_model=TokenOut,
    errors=(401, 429, 431, 503, 504),
    credentials=(Depends(api_key_header),),
    tag="tokens",
)
def create_token() -> token_pb.CreateTokenRequest:
    """Exchange an API key (`X-API-Key` or `Authorization: Bearer agq_...`) for a JWT."""
    return token_pb.CreateTokenRequest()
