"""AdminService servicer: API keys and tenant limits, for the operator's admin token."""

from __future__ import annotations

from agentq.v1 import admin_service_pb2 as pb
from agentq.v1 import admin_service_pb2_grpc as pb_grpc
from server.api.context import Context
from server.api.convert import timestamp
from server.service.access import AccessService, Limits, NewKey
from server.store.records import ApiKeyRecord
from server.validation import parse_id


def key_message(row: ApiKeyRecord) -> pb.ApiKey:
    """The metadata of a key; the key itself is not stored, so it cannot appear."""
    message = pb.ApiKey(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        role=row.role,
        scopes=row.scopes.split(),
        prefix=row.prefix,
        created_at=timestamp(row.created_at),
        tier=row.tier,
    )
    for field in ("last_used_at", "expires_at", "revoked_at"):
        value = getattr(row, field)
        if value is not None:
            getattr(message, field).CopyFrom(timestamp(value))
    return message


def limits_message(limits: Limits) -> pb.TenantLimits:
    """The limits in force for a tenant."""
    return pb.TenantLimits(
        tenant_id=limits.tenant_id,
        tier=limits.tier_name,
        rate_per_second=limits.tier.rate,
        burst=limits.tier.burst,
        max_unfinished_jobs=-1
        if limits.max_unfinished_jobs is None
        else limits.max_unfinished_jobs,
        per_minute=limits.tier.per_minute,
        per_day=limits.tier.per_day,
    )


class AdminServicer(pb_grpc.AdminServiceServicer):
    """API keys and tenant limits."""

    def __init__(self, access: AccessService) -> None:
        self._access = access

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        new = NewKey(
            tenant_id=request.tenant_id,
            name=request.name,
            role=request.role or "user",
            scopes=list(request.scopes),
            lifetime_s=request.lifetime_seconds if request.HasField("lifetime_seconds") else None,
            tier=request.tier if request.HasField("tier") else None,
        )
        row, key = await self._access.create_key(new)
        return pb.CreateApiKeyResponse(api_key=key_message(row), key=key)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Context
    ) -> pb.ListApiKeysResponse:
        tenant = request.tenant_id if request.HasField("tenant_id") else None
        rows = await self._access.list_keys(tenant)
        return pb.ListApiKeysResponse(api_keys=[key_message(r) for r in rows])

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Context
    ) -> pb.RevokeApiKeyResponse:
        await self._access.revoke_key(parse_id(request.key_id, "key_id"))
        return pb.RevokeApiKeyResponse()

    async def SetTenantLimits(
        self, request: pb.SetTenantLimitsRequest, context: Context
    ) -> pb.SetTenantLimitsResponse:
        limits = await self._access.set_limits(
            request.tenant_id,
            tier=request.tier if request.HasField("tier") else None,
            max_unfinished=(
                request.max_unfinished_jobs if request.HasField("max_unfinished_jobs") else None
            ),
        )
        return pb.SetTenantLimitsResponse(limits=limits_message(limits))

    async def GetTenantLimits(
        self, request: pb.GetTenantLimitsRequest, context: Context
    ) -> pb.GetTenantLimitsResponse:
        limits = await self._access.limits(request.tenant_id)
        return pb.GetTenantLimitsResponse(limits=limits_message(limits))
