"""The gRPC backend the shim calls: one grpc.aio channel, and a route's call and answer on it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from starlette.datastructures import Headers
from starlette.responses import Response

from agentq.v1 import (
    admin_service_pb2_grpc,
    agent_service_pb2_grpc,
    api_key_service_pb2_grpc,
    context_service_pb2_grpc,
    event_service_pb2_grpc,
    job_service_pb2_grpc,
    system_service_pb2_grpc,
    token_service_pb2_grpc,
    webhook_service_pb2_grpc,
    workflow_service_pb2_grpc,
)
from rest_shim import render
from rest_shim.access_log import TENANT_WANTED, tenant_from
from rest_shim.errors import rate_headers

if TYPE_CHECKING:
    from rest_shim.table import Route


def _metadata_value(value: str) -> str:
    # gRPC metadata is printable ASCII; anything else is replaced so the
    # server still sees (and rejects) the header rather than the shim deciding.
    # Printable ASCII is exactly " " to "~"; checking that first spares the
    # per-character rebuild of a clean token (some 20 us) on every call.
    if value.isascii() and value.isprintable():
        return value
    return "".join(c if " " <= c <= "~" else "?" for c in value)


# Request headers that travel to the server as metadata: credentials are
# judged there, never here.
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "x-admin-api-key")
FORWARDED = (
    *CREDENTIAL_HEADERS,
    # Set by the middleware from the connection, never by the client.
    "x-agentq-client-address",
)


def forwarded(headers: Headers, request_id: str) -> list[tuple[str, str]]:
    """The metadata of one call: the request id, the caller's credentials, and the ask for
    the tenant the server admits the call for (the access line names it).

    Every copy of a credential header travels, so the server sees (and refuses)
    a credential sent twice rather than the shim picking one.
    """
    metadata = [("x-request-id", request_id), (TENANT_WANTED, "1")]
    for header in FORWARDED:
        for value in headers.getlist(header):
            metadata.append((header, _metadata_value(value)))
    return metadata


class Backend:
    """Stubs of every agentq.v1 service over one channel to the gRPC server."""

    def __init__(self, target: str, *, timeout_s: float) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._timeout_s = timeout_s
        self._stubs: dict[str, Any] = {
            "AgentService": agent_service_pb2_grpc.AgentServiceStub(self._channel),
            "ApiKeyService": api_key_service_pb2_grpc.ApiKeyServiceStub(self._channel),
            "JobService": job_service_pb2_grpc.JobServiceStub(self._channel),
            "ContextService": context_service_pb2_grpc.ContextServiceStub(self._channel),
            "EventService": event_service_pb2_grpc.EventServiceStub(self._channel),
            "WebhookService": webhook_service_pb2_grpc.WebhookServiceStub(self._channel),
            "SystemService": system_service_pb2_grpc.SystemServiceStub(self._channel),
            "AdminService": admin_service_pb2_grpc.AdminServiceStub(self._channel),
            "TokenService": token_service_pb2_grpc.TokenServiceStub(self._channel),
            "WorkflowService": workflow_service_pb2_grpc.WorkflowServiceStub(self._channel),
        }

    def method(self, rpc: str) -> Callable[..., Any]:
        """The stub method of an RPC named `Service.Method`, e.g. `JobService.GetJob`."""
        service, _, name = rpc.partition(".")
        method: Callable[..., Any] = getattr(self._stubs[service], name)
        return method

    async def call(
        self, method: Callable[..., Any], request: Any, *, headers: Headers, request_id: str
    ) -> tuple[Any, Sequence[tuple[str, str | bytes]]]:
        """One RPC with the caller's credentials and request id; its reply and trailers."""
        call = method(request, metadata=forwarded(headers, request_id), timeout=self._timeout_s)
        reply = await call
        return reply, tuple(await call.trailing_metadata() or ())

    async def answer(
        self,
        route: Route,
        message: Any,
        *,
        arguments: Mapping[str, Any],
        headers: Headers,
        state: dict[str, Any],
    ) -> Response:
        """Make the route's RPC and render its reply; a failed call raises its AioRpcError.

        `arguments` built `message`; a refused field's error names where it was sent.
        """
        state["field_location"] = functools.partial(route.location, arguments)
        reply, trailers = await self.call(
            self.method(route.rpc), message, headers=headers, request_id=state["request_id"]
        )
        state["rate_headers"] = rate_headers(trailers)
        state["tenant"] = tenant_from(trailers)
        if route.render is None:
            return Response(status_code=route.status)
        return render.json_response(route.render(reply), route.status)

    def watch(
        self, method: Callable[..., Any], request: Any, *, headers: Headers, request_id: str
    ) -> Any:
        """Open a server stream; it has no deadline, the client decides how long to watch."""
        return method(request, metadata=forwarded(headers, request_id))

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()
