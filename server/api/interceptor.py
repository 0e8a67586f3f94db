"""The one interceptor: request ids, the guard's checks, and errors as google.rpc.Status."""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2, message
from google.rpc import error_details_pb2, status_pb2

from server.api.call_log import TENANT_TRAILER, log_call
from server.api.context import Context, principal_var, request_id_var
from server.api.credential_size import check_credential_size
from server.api.guard import Admission, Guard
from server.errors import (
    INTERNAL_MESSAGE,
    AgentQError,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    status_for,
)

log = logging.getLogger(__name__)

ERROR_DOMAIN = "agentq"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_details(error: AgentQError) -> tuple[grpc.StatusCode, bytes]:
    """The gRPC code and serialized google.rpc.Status of an error, with its details."""
    code, reason = status_for(error)
    status = status_pb2.Status(code=code.value[0], message=error.message)
    status.details.append(_packed(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)))
    if isinstance(error, InvalidArgument):
        violations = [
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ]
        status.details.append(_packed(error_details_pb2.BadRequest(field_violations=violations)))
    if isinstance(error, ResourceExhausted):
        delay = duration_pb2.Duration(seconds=error.retry_after_s)
        status.details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
        violation = error_details_pb2.QuotaFailure.Violation(
            subject=error.subject, description=error.limit
        )
        status.details.append(_packed(error_details_pb2.QuotaFailure(violations=[violation])))
    return code, status.SerializeToString()


class _Unparsable:
    """Stands in for a unary request whose bytes are not a message of its type."""


_UNPARSABLE = _Unparsable()


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """Parse a unary request; grpc answers UNKNOWN with the exception text if parsing raises."""

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except message.DecodeError:
            return _UNPARSABLE

    return parse


def _strict(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """Parse each message of a request stream, raising while the guarded handler iterates."""

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except message.DecodeError:
            raise InvalidArgument.unparsable() from None

    return parse


def _repeated(pairs: tuple[tuple[str, Any], ...]) -> frozenset[str]:
    """The metadata keys sent more than once (`dict` keeps only the last of each)."""
    if len({key for key, _ in pairs}) == len(pairs):
        return frozenset()
    return frozenset(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)


class GuardInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler so no RPC runs unchecked and every error has one shape."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        # Each method's handler is wrapped once, not on every call.
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        known = self._guarded.get(method)
        if known is None or known[0] is not handler:
            known = (handler, _Guard(self._guard, method).wrap(handler))
            self._guarded[method] = known
        guarded: grpc.RpcMethodHandler[Any, Any] = known[1]
        return guarded


class _Guard:
    """The checks and error mapping around each call of one method."""

    def __init__(self, guard: Guard, method: str) -> None:
        self._guard = guard
        self._method = method

    def wrap(self, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        deserializer = handler.request_deserializer
        if deserializer is not None:
            deserializer = (
                _strict(deserializer) if handler.request_streaming else _tolerant(deserializer)
            )
        kwargs = {
            "request_deserializer": deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary), **kwargs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream), **kwargs
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(self._unary(handler.stream_unary), **kwargs)
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(handler.stream_stream), **kwargs
            )
        raise RuntimeError(f"handler of {self._method} has no behaviour")

    def _unary(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def guarded(request: Any, context: Context) -> Any:
            async with self._guarded(request, context):
                return await behavior(request, context)

        return guarded

    def _stream(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def guarded(request: Any, context: Context) -> AsyncIterator[Any]:
            async with self._guarded(request, context):
                async for response in behavior(request, context):
                    yield response

        return guarded

    @contextlib.asynccontextmanager
    async def _guarded(self, request: Any, context: Context) -> AsyncIterator[None]:
        """Admit a call, answer its errors as statuses, and log it: unary or streaming."""
        admission = Admission()
        started = time.perf_counter()
        # What the call ends with unless it returns or fails: its caller went away.
        code, failure = "CANCELLED", None
        try:
            await self._admit(context, admission)
            if request is _UNPARSABLE:
                raise InvalidArgument.unparsable()
            yield
            code = "OK"
        except Exception as error:
            code, failure = _code_name(error, context), error
            await self._abort(context, error, admission)
        finally:
            tenant = _tenant(admission, failure)
            duration_s = time.perf_counter() - started
            log_call(self._method, code=code, duration_s=duration_s, tenant=tenant)

    async def _admit(self, context: Context, admission: Admission) -> None:
        pairs = tuple(context.invocation_metadata() or ())
        metadata = dict(pairs)
        sent = metadata.get("x-request-id")
        request_id = sent if isinstance(sent, str) and _SANE_REQUEST_ID.fullmatch(sent) else None
        request_id_var.set(request_id or str(uuid.uuid4()))
        check_credential_size(pairs)
        await self._guard.admit(
            self._method, metadata, admission, repeated=_repeated(pairs), peer=context.peer()
        )
        if admission.principal is not None:
            principal_var.set(admission.principal)
        trailers = [*admission.trailers, *_tenant_trailers(_tenant(admission, None))]
        if trailers:
            context.set_trailing_metadata(tuple(trailers))

    async def _abort(self, context: Context, error: Exception, admission: Admission) -> None:
        if isinstance(error, grpc.aio.AbortError):
            raise error
        if not isinstance(error, AgentQError):
            log.error(
                "unexpected error in %s (request %s)",
                self._method,
                request_id_var.get(),
                exc_info=error,
            )
            error = Internal(INTERNAL_MESSAGE)
        code, details = status_details(error)
        trailers: list[tuple[str, str | bytes]] = [
            ("grpc-status-details-bin", details),
            ("x-request-id", request_id_var.get()),
            *admission.trailers,
            *_tenant_trailers(_tenant(admission, error)),
        ]
        await context.abort(code, error.message, trailing_metadata=tuple(trailers))


def _code_name(error: Exception, context: Context) -> str:
    """The gRPC status code a failed call ends with, as the access line names it."""
    if isinstance(error, AgentQError):
        return status_for(error)[0].name
    if isinstance(error, grpc.aio.AbortError):
        # A servicer aborted the call itself; the context holds the code it gave.
        code = context.code()
        return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    return "INTERNAL"


def _tenant(admission: Admission, error: Exception | None) -> str | None:
    """The caller's tenant, once known: admitted, or refused by its tenant's rate limit."""
    if admission.principal is not None:
        return admission.principal.tenant_id
    if isinstance(error, ResourceExhausted) and error.subject.startswith("tenant:"):
        return error.subject.removeprefix("tenant:")
    return None


def _tenant_trailers(tenant: str | None) -> list[tuple[str, str | bytes]]:
    return [] if tenant is None else [(TENANT_TRAILER, tenant.encode())]
