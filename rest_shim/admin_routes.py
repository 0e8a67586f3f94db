"""The operator's routes (/admin/...) and the token exchange, each one RPC."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import APIKeyHeader

from agentq.v1 import admin_service_pb2 as admin_pb
from agentq.v1 import token_service_pb2 as token_pb
from rest_shim import render
from rest_shim.routes import call, errors, int32, int64
from rest_shim.schemas import (
    ApiKeyList,
    CreateApiKeyBody,
    CreatedApiKeyOut,
    TenantLimitsBody,
    TenantLimitsOut,
    TokenOut,
)

# Document the headers; the server alone checks them.
admin_header = APIKeyHeader(name="X-Admin-API-Key", scheme_name="AdminApiKey", auto_error=False)
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
_ADMIN = [Depends(admin_header)]

router = APIRouter()


@router.post(
    "/admin/api-keys",
    status_code=201,
    response_model=CreatedApiKeyOut,
    responses=errors(403, 400, 413, 415, 422, 503, 504),
    dependencies=_ADMIN,
    tags=["admin"],
)
async def create_api_key(body: CreateApiKeyBody, request: Request) -> Response:
    """Create an API key; the response is the only time the key is shown."""
    lifetime = body.lifetime_seconds
    message = admin_pb.CreateApiKeyRequest(
        tenant_id=body.tenant_id,
        name=body.name,
        role=body.role,
        scopes=body.scopes,
        lifetime_seconds=None if lifetime is None else int64(lifetime),
    )
    reply = await call(request, request.app.state.backend.admin.CreateApiKey, message)
    return render.json_response({**render.api_key(reply.api_key), "key": reply.key}, 201)


@router.get(
    "/admin/api-keys",
    response_model=ApiKeyList,
    responses=errors(403, 422, 503, 504),
    dependencies=_ADMIN,
    tags=["admin"],
)
async def list_api_keys(request: Request, tenant_id: str | None = None) -> Response:
    """List API keys (metadata only), newest first."""
    message = admin_pb.ListApiKeysRequest(tenant_id=tenant_id)
    reply = await call(request, request.app.state.backend.admin.ListApiKeys, message)
    return render.json_response({"data": [render.api_key(k) for k in reply.api_keys]})


@router.delete(
    "/admin/api-keys/{key_id}",
    status_code=204,
    response_class=Response,
    responses=errors(403, 404, 422, 503, 504),
    dependencies=_ADMIN,
    tags=["admin"],
)
async def revoke_api_key(key_id: uuid.UUID, request: Request) -> Response:
    """Revoke an API key; every server refuses it from the next request on."""
    message = admin_pb.RevokeApiKeyRequest(key_id=str(key_id))
    await call(request, request.app.state.backend.admin.RevokeApiKey, message)
    return Response(status_code=204)


@router.put(
    "/admin/tenants/{tenant_id}/limits",
    response_model=TenantLimitsOut,
    responses=errors(403, 400, 413, 415, 422, 503, 504),
    dependencies=_ADMIN,
    tags=["admin"],
)
async def set_tenant_limits(tenant_id: str, body: TenantLimitsBody, request: Request) -> Response:
    """Set a tenant's rate-limit tier and cap on unfinished jobs."""
    cap = body.max_unfinished_jobs
    message = admin_pb.SetTenantLimitsRequest(
        tenant_id=tenant_id, tier=body.tier, max_unfinished_jobs=None if cap is None else int32(cap)
    )
    reply = await call(request, request.app.state.backend.admin.SetTenantLimits, message)
    return render.json_response(render.limits(reply.limits))


@router.get(
    "/admin/tenants/{tenant_id}/limits",
    response_model=TenantLimitsOut,
    responses=errors(403, 422, 503, 504),
    dependencies=_ADMIN,
    tags=["admin"],
)
async def get_tenant_limits(tenant_id: str, request: Request) -> Response:
    """The limits in force for a tenant."""
    message = admin_pb.GetTenantLimitsRequest(tenant_id=tenant_id)
    reply = await call(request, request.app.state.backend.admin.GetTenantLimits, message)
    return render.json_response(render.limits(reply.limits))


@router.post(
    "/api/v1/tokens",
    response_model=TokenOut,
    responses=errors(401, 429, 503, 504),
    dependencies=[Depends(api_key_header)],
    tags=["tokens"],
)
async def create_token(request: Request) -> Response:
    """Exchange an API key (`X-API-Key` or `Authorization: Bearer agq_...`) for a JWT."""
    message = token_pb.CreateTokenRequest()
    reply = await call(request, request.app.state.backend.tokens.CreateToken, message)
    return render.json_response(render.token(reply))
