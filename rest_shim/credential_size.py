"""The size limit of credential headers, checked before a request goes anywhere."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from rest_shim.backend import CREDENTIAL_HEADERS
from rest_shim.errors import error_response

# Every copy of every credential header together, as the gRPC server counts the metadata
# they become (server/api/credential_size.py): a larger credential is refused here,
# so it never reaches the channel, whose own metadata limit answers RESOURCE_EXHAUSTED.
MAX_CREDENTIAL_BYTES = 8 * 1024
_CREDENTIAL_HEADERS = frozenset(name.encode() for name in CREDENTIAL_HEADERS)


def credential_bytes(scope: Scope) -> int:
    """The size of the request's credential header values, every copy counted."""
    return sum(len(value) for name, value in scope["headers"] if name in _CREDENTIAL_HEADERS)


class CredentialSizeMiddleware:
    """Answers 431 to credentials over MAX_CREDENTIAL_BYTES, before routing or any body."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and credential_bytes(scope) > MAX_CREDENTIAL_BYTES:
            message = f"Credentials exceed the limit of {MAX_CREDENTIAL_BYTES} bytes"
            response = error_response("REQUEST_HEADER_FIELDS_TOO_LARGE", message)
            await response(scope, receive, send)
            return
        await self._app(scope, receive, send)
