"""The guard of every call: the interceptor around each handler, and the checks it asks.

`GuardInterceptor` wraps every RPC so none runs unchecked: it gives the call its request
id, has `Guard` admit it (admin token, credentials, role, scope, rate limit), answers
every error as a google.rpc.Status (`status.py`) and writes the call's access line.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from server import metrics
from server.api import policy
from server.api.call_log import TENANT_TRAILER, TENANT_WANTED, log_call
from server.api.context import Context, principal_var, request_id_var
from server.api.credential_size import check_credential_size
from server.api.failures import FailureThrottle, client_address
from server.api.parsing import UNPARSABLE, strict, tolerant
from server.api.status import code_name, status_details
from server.auth.principal import Principal, require_role, require_scope
from server.auth.tokens import INVALID_HEADER_FORMAT, BearerVerifier
from server.errors import (
    INTERNAL_MESSAGE,
    AgentQError,
    Internal,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from server.ratelimit import RateLimiter
from server.service.access import INVALID_KEY, KEY_PREFIX, AccessService

log = logging.getLogger(__name__)

ADMIN_DENIED = "Invalid or missing admin token."
MISSING_KEY = "Missing API key"
TOO_MANY = "Too many requests"
_BEARER_KEY = re.compile(r"bearer (agq_\S+)", re.IGNORECASE)
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True)
class JwtSettings:
    """How JWTs are checked."""

    secret: str
    issuer: str
    audience: str | None
    # The longest `exp - iat` accepted; None for no limit.
    max_ttl_s: int | None = None


@dataclass
class Admission:
    """The outcome of the checks: the caller, and metadata for the response trailers."""

    principal: Principal | None = None
    trailers: list[tuple[str, str]] = field(default_factory=list)
    # Whether the caller asked for its tenant in the trailers (call_log.TENANT_WANTED).
    tenant_wanted: bool = False


class Guard:
    """Decides whether one call may run; raises the error that says why not."""

    def __init__(
        self,
        *,
        jwt: JwtSettings,
        access: AccessService,
        limiter: RateLimiter,
        admin_token: str | None,
        failure_burst: int = 20,
        trusted_proxies: Collection[str] = ("127.0.0.1", "::1"),
    ) -> None:
        self._bearer = BearerVerifier(
            secret=jwt.secret, issuer=jwt.issuer, audience=jwt.audience, max_ttl_s=jwt.max_ttl_s
        )
        self._access = access
        self._limiter = limiter
        self._admin_token = admin_token.encode() if admin_token else None
        self._failures = FailureThrottle(failure_burst)
        self._trusted_proxies = frozenset(trusted_proxies)

    async def admit(
        self,
        method: str,
        metadata: Mapping[str, Any],
        admission: Admission,
        *,
        repeated: Collection[str] = (),
        peer: str = "",
    ) -> None:
        """Run every check for `method`; fills `admission` as it goes.

        `repeated` names the metadata keys the caller sent more than once; `peer` is the
        gRPC peer, whose failed credential checks are throttled (`failures.py`).
        """
        if method in policy.PUBLIC:
            return
        if method in policy.ADMIN:
            # Two admin tokens are no admin token: neither is picked over the other.
            ambiguous = "x-admin-api-key" in repeated
            self._check_admin(None if ambiguous else metadata.get("x-admin-api-key"))
            return
        access = policy.ACCESS.get(method)
        if access is None:
            raise PermissionDenied("Insufficient permissions")  # fail closed
        address = client_address(peer, metadata, self._trusted_proxies)
        self._failures.check(address)
        try:
            _refuse_ambiguous(repeated)
            principal = await self._authenticate(method, metadata)
        except Unauthenticated:
            self._failures.failed(address)
            raise
        if access.roles is not None:
            require_role(principal, access.roles)
        require_scope(principal, access.scope)
        tier = self._access.cached_tier(principal.tenant_id)
        if tier is None:
            tier = await self._access.tier_of(principal.tenant_id)
        key = await self._access.key_limits(principal.api_key_id)
        decision = await self._limiter.take(principal.tenant_id, tier, key)
        # The headers report the tightest limit in force (README, Access control).
        admission.trailers += [
            ("x-ratelimit-limit", str(decision.limit)),
            ("x-ratelimit-remaining", str(decision.remaining)),
            ("x-ratelimit-reset", str(decision.reset_at)),
        ]
        if not decision.allowed:
            metrics.refused("rate_limit")
            raise ResourceExhausted(
                TOO_MANY,
                retry_after_s=decision.retry_after_s,
                subject=decision.subject,
                limit=decision.description,
                tenant_id=principal.tenant_id,
            )
        admission.principal = principal

    def _check_admin(self, sent: object) -> None:
        # Constant-time, and closed when no admin token is configured.
        if self._admin_token is None or not isinstance(sent, str):
            raise PermissionDenied(ADMIN_DENIED)
        if not hmac.compare_digest(sent.encode(), self._admin_token):
            raise PermissionDenied(ADMIN_DENIED)

    @staticmethod
    def _api_key(metadata: Mapping[str, Any]) -> str | None:
        """The API key the caller sent, as `x-api-key` or `authorization: Bearer agq_...`."""
        key = metadata.get("x-api-key")
        if key is not None:
            return str(key)
        authorization = metadata.get("authorization")
        match = _BEARER_KEY.fullmatch(authorization) if isinstance(authorization, str) else None
        return match.group(1) if match else None

    async def _authenticate(self, method: str, metadata: Mapping[str, Any]) -> Principal:
        authorization = metadata.get("authorization")
        key = self._api_key(metadata)
        if method in policy.KEY_EXCHANGE:
            if key is None:
                raise Unauthenticated(INVALID_KEY if authorization else MISSING_KEY)
            return await self._access.verify(key)
        if key is not None:
            if not key.startswith(KEY_PREFIX):
                raise Unauthenticated(INVALID_KEY)
            return await self._access.verify(key)
        principal = self._bearer.verify(authorization if isinstance(authorization, str) else None)
        if principal.api_key_id is not None and await self._access.has_ended(principal.api_key_id):
            # A token made from a key ends with it: its caller is the key's.
            raise Unauthenticated(INVALID_KEY)
        return principal


def _refuse_ambiguous(repeated: Collection[str]) -> None:
    """Refuse a credential sent twice: whichever copy a proxy or client reads, none is chosen."""
    if "authorization" in repeated:
        raise Unauthenticated(INVALID_HEADER_FORMAT)
    if "x-api-key" in repeated:
        raise Unauthenticated(INVALID_KEY)


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
            known = (handler, _GuardedMethod(self._guard, method).wrap(handler))
            self._guarded[method] = known
        guarded: grpc.RpcMethodHandler[Any, Any] = known[1]
        return guarded


class _GuardedMethod:
    """The checks and error mapping around each call of one method."""

    def __init__(self, guard: Guard, method: str) -> None:
        self._guard = guard
        self.name = method

    def wrap(self, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        deserializer = handler.request_deserializer
        if deserializer is not None:
            deserializer = (
                strict(deserializer) if handler.request_streaming else tolerant(deserializer)
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
        raise RuntimeError(f"handler of {self.name} has no behaviour")

    def _unary(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def guarded(request: Any, context: Context) -> Any:
            async with _Call(self, request, context):
                return await behavior(request, context)

        return guarded

    def _stream(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def guarded(request: Any, context: Context) -> AsyncIterator[Any]:
            async with _Call(self, request, context):
                async for response in behavior(request, context):
                    yield response

        return guarded

    async def admit(self, context: Context, admission: Admission) -> None:
        """Give the call its request id and run the guard's checks; fills `admission`."""
        pairs = tuple(context.invocation_metadata() or ())
        metadata = dict(pairs)
        sent = metadata.get("x-request-id")
        request_id = sent if isinstance(sent, str) and _SANE_REQUEST_ID.fullmatch(sent) else None
        request_id_var.set(request_id or str(uuid.uuid4()))
        admission.tenant_wanted = TENANT_WANTED in metadata
        check_credential_size(pairs)
        await self._guard.admit(
            self.name, metadata, admission, repeated=_repeated(pairs), peer=context.peer()
        )
        if admission.principal is not None:
            principal_var.set(admission.principal)
        trailers = [*admission.trailers, *_tenant_trailers(admission, None)]
        if trailers:
            context.set_trailing_metadata(tuple(trailers))

    async def abort(self, context: Context, error: Exception, admission: Admission) -> None:
        """End the call with `error` as its status (an unexpected error is INTERNAL)."""
        if isinstance(error, grpc.aio.AbortError):
            raise error
        if not isinstance(error, AgentQError):
            log.error(
                "unexpected error in %s (request %s)",
                self.name,
                request_id_var.get(),
                exc_info=error,
            )
            error = Internal(INTERNAL_MESSAGE)
        code, details = status_details(error)
        trailers: list[tuple[str, str | bytes]] = [
            ("grpc-status-details-bin", details),
            ("x-request-id", request_id_var.get()),
            *admission.trailers,
            *_tenant_trailers(admission, error),
        ]
        await context.abort(code, error.message, trailing_metadata=tuple(trailers))


class _Call:
    """One call of a guarded method: admitted on entry; on exit, its error answered as a
    status and its access line written, whether it is unary or a stream.

    A class rather than a generator-based context manager: this runs on every call, and
    the generator's machinery cost more than the rest of it.
    """

    __slots__ = ("_admission", "_context", "_method", "_request", "_started")

    def __init__(self, method: _GuardedMethod, request: Any, context: Context) -> None:
        self._method = method
        self._request = request
        self._context = context
        self._admission = Admission()
        self._started = time.perf_counter()

    async def __aenter__(self) -> None:
        try:
            await self._method.admit(self._context, self._admission)
            if self._request is UNPARSABLE:
                raise InvalidArgument.unparsable()
        except BaseException as error:
            await self.__aexit__(type(error), error, error.__traceback__)
            raise

    async def __aexit__(self, _type: object, error: BaseException | None, _tb: object) -> bool:
        # A call that ends with neither a return nor an error: its caller went away.
        code, failure = ("OK", None) if error is None else ("CANCELLED", None)
        if isinstance(error, Exception):
            code, failure = code_name(error, self._context), error
        try:
            if failure is not None:
                await self._method.abort(self._context, failure, self._admission)
        finally:
            tenant = _tenant(self._admission, failure)
            duration_s = time.perf_counter() - self._started
            log_call(self._method.name, code=code, duration_s=duration_s, tenant=tenant)
        return False


def _tenant(admission: Admission, error: Exception | None) -> str | None:
    """The caller's tenant, once known: admitted, or refused by its tenant's rate limit."""
    if admission.principal is not None:
        return admission.principal.tenant_id
    if isinstance(error, ResourceExhausted) and error.tenant_id is not None:
        return error.tenant_id
    return None


def _tenant_trailers(
    admission: Admission, error: Exception | None
) -> list[tuple[str, str | bytes]]:
    tenant = _tenant(admission, error) if admission.tenant_wanted else None
    return [] if tenant is None else [(TENANT_TRAILER, tenant.encode())]
