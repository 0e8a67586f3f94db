"""One exception hierarchy for every failed call, read from the gRPC status and its details.

The server puts a `google.rpc.Status` in the trailer `grpc-status-details-bin`, with an
`ErrorInfo` whose `reason` names the error (VALIDATION_ERROR, NOT_FOUND, RATE_LIMITED, ...),
a `BadRequest` with the field violations, and a `RetryInfo` when a retry may succeed. The
reason picks the class; a status without one (the transport's own errors) falls back on
its code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: its name and what is wrong with it."""

    field: str
    description: str


class AgentQError(Exception):
    """Base of every error the client raises for a failed call."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        reason: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason  # the ErrorInfo reason, "" when the status carried none
        self.retry_after = retry_after  # seconds, from RetryInfo, when the server sent one


class ValidationError(AgentQError):
    """A request field broke its rule (INVALID_ARGUMENT); `violations` names them."""

    def __init__(
        self,
        message: str,
        *,
        violations: list[FieldViolation] | None = None,
        code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT,
        reason: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, reason=reason, retry_after=retry_after)
        self.violations = violations or []


class Unauthenticated(AgentQError):
    """Missing, invalid or expired credentials (UNAUTHENTICATED)."""


class CredentialsTooLarge(Unauthenticated):
    """Credentials over the server's size limit."""


class PermissionDenied(AgentQError):
    """The credentials may not make this call (PERMISSION_DENIED)."""


class NotFound(AgentQError):
    """No such agent or job for the caller's tenant (NOT_FOUND)."""


class Conflict(AgentQError):
    """The resource's state forbids the request, such as cancelling a completed job."""


class AlreadyExists(Conflict):
    """A `request_id` that was used before for a different request (ALREADY_EXISTS)."""


class RateLimited(AgentQError):
    """Over the tenant's rate limit or its cap of unfinished jobs; retry after `retry_after`."""


class Unavailable(AgentQError):
    """The server, or a store it needs, did not answer (UNAVAILABLE)."""


class DeadlineExceeded(AgentQError):
    """The call ran past its deadline."""


class InternalError(AgentQError):
    """The server failed unexpectedly (INTERNAL or UNKNOWN)."""


class Cancelled(AgentQError):
    """The call was cancelled before it finished (CANCELLED)."""


_BY_REASON: dict[str, type[AgentQError]] = {
    "VALIDATION_ERROR": ValidationError,
    "UNAUTHORIZED": Unauthenticated,
    "REQUEST_HEADER_FIELDS_TOO_LARGE": CredentialsTooLarge,
    "FORBIDDEN": PermissionDenied,
    "NOT_FOUND": NotFound,
    "CONFLICT": Conflict,
    "RATE_LIMITED": RateLimited,
    "SERVICE_UNAVAILABLE": Unavailable,
    "TIMEOUT": DeadlineExceeded,
    "INTERNAL_ERROR": InternalError,
}

_BY_CODE: dict[grpc.StatusCode, type[AgentQError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: ValidationError,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
}


def status_from_metadata(metadata: Iterable[Any] | None) -> status_pb2.Status:
    """The google.rpc.Status in trailing metadata (key, value pairs); empty when there is none."""
    status = status_pb2.Status()
    for key, value in metadata or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            status.ParseFromString(value)
    return status


def _error_class(code: grpc.StatusCode, reason: str) -> type[AgentQError]:
    if reason == "CONFLICT" and code == grpc.StatusCode.ALREADY_EXISTS:
        return AlreadyExists
    return _BY_REASON.get(reason) or _BY_CODE.get(code, InternalError)


def error_from_status(
    code: grpc.StatusCode, message: str, status: status_pb2.Status
) -> AgentQError:
    """The exception for a status code, its message and its google.rpc details."""
    reason, retry_after, violations = "", None, []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToTimedelta().total_seconds()
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]
    cls = _error_class(code, reason)
    if cls is ValidationError:
        return ValidationError(
            message, violations=violations, code=code, reason=reason, retry_after=retry_after
        )
    return cls(message, code=code, reason=reason, retry_after=retry_after)


def error_from_rpc(error: grpc.RpcError) -> AgentQError:
    """The exception for a failed call of grpcio, sync or asyncio."""
    code = error.code()
    message = error.details() or code.name
    trailers = error.trailing_metadata()
    return error_from_status(code, message, status_from_metadata(trailers))
