"""ASGI middleware: the request id on every response, the 1 MiB body limit, the access line."""

from __future__ import annotations

import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rest_shim.access_log import log_request, route_of, route_template
from rest_shim.errors import error_response

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
REQUEST_ID_HEADER = "X-Request-ID"
# The client address the server throttles failed credential checks by
# (server/api/failures.py); the server believes it from a trusted proxy only.
CLIENT_ADDRESS = "x-agentq-client-address"


class _BodyTooLarge(Exception):
    pass


class RequestContextMiddleware:
    """Gives each request an id (the caller's if sane), refuses bodies over the limit,
    and logs one access line per request once it has been answered."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self._app = app
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        began = time.perf_counter()
        # Unless a response starts, the client gets uvicorn's 500 (the app raised first).
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._serve(scope, receive, send_noting_status)
        finally:
            state = scope.get("state", {})
            template = route_template(scope)
            log_request(
                method=scope["method"],
                route=route_of(scope) if template is None else template,
                status=status,
                duration_s=time.perf_counter() - began,
                request_id=state.get("request_id", "-"),
                tenant=state.get("tenant") or "-",
                matched=template is not None,
            )

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        _name_the_client(scope)
        headers = Headers(scope=scope)
        sent = headers.get("x-request-id", "")
        request_id = sent if _SANE_REQUEST_ID.fullmatch(sent) else str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                for name, value in scope["state"].get("rate_headers", {}).items():
                    headers.setdefault(name, value)
            await send(message)

        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body_bytes:
            await self._too_large(scope, receive, send_with_id)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max_body_bytes:
                    # Marked as well as raised: FastAPI turns errors raised while it
                    # reads a body into its own 400, and the handler looks here.
                    scope["state"]["body_too_large"] = self._max_body_bytes
                    raise _BodyTooLarge
            return message

        try:
            await self._app(scope, counted_receive, send_with_id)
        except _BodyTooLarge:
            if started:
                raise
            await self._too_large(scope, receive, send_with_id)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await body_too_large(self._max_body_bytes)(scope, receive, send)


def body_too_large(limit: int) -> JSONResponse:
    """The 413 answer; the connection closes, as the rest of the body is not read."""
    message = f"Request body exceeds the limit of {limit} bytes"
    return error_response("PAYLOAD_TOO_LARGE", message, headers={"Connection": "close"})


def _name_the_client(scope: Scope) -> None:
    """Put the client's address in the request's headers, for the server's throttle of
    failed credential checks; a copy the client sent itself is dropped."""
    name = CLIENT_ADDRESS.encode()
    kept = [(key, value) for key, value in scope["headers"] if key.lower() != name]
    client = scope.get("client")
    if client:
        kept.append((name, str(client[0]).encode()))
    scope["headers"] = kept
