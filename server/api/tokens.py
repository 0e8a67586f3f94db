"""TokenService servicer: an API key in, a short-lived JWT out."""

from __future__ import annotations

from agentq.v1 import token_service_pb2 as pb
from agentq.v1 import token_service_pb2_grpc as pb_grpc
from server.api.context import Context, current_principal
from server.api.convert import timestamp
from server.service.access import TokenIssuer


class TokenServicer(pb_grpc.TokenServiceServicer):
    """Exchanges the calling API key for a JWT."""

    def __init__(self, issuer: TokenIssuer) -> None:
        self._issuer = issuer

    async def CreateToken(
        self, request: pb.CreateTokenRequest, context: Context
    ) -> pb.CreateTokenResponse:
        token, expires, lifetime_s = self._issuer.exchange(current_principal())
        return pb.CreateTokenResponse(
            access_token=token,
            token_type="bearer",
            expires_in=lifetime_s,
            expires_at=timestamp(expires),
        )
