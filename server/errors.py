"""The one exception hierarchy of agentq, and its table to gRPC status codes."""

from __future__ import annotations

from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: its name and what is wrong with it."""

    field: str
    description: str


class AgentQError(Exception):
    """Base of every error a client is meant to see; `message` is sent as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(AgentQError):
    """A request field is missing, of the wrong type or out of range."""

    def __init__(self, violations: list[FieldViolation], *, message: str | None = None) -> None:
        super().__init__(message or violations[0].description)
        self.violations = violations

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """One violation of one field."""
        return cls([FieldViolation(field, description)])

    @classmethod
    def unparsable(cls) -> InvalidArgument:
        """A request whose bytes are not a message of its type: no field can be named."""
        return cls([], message=UNPARSABLE_MESSAGE)


class Unauthenticated(AgentQError):
    """Missing, malformed, invalid or expired credentials."""


class CredentialsTooLarge(Unauthenticated):
    """Credentials larger than the limit: refused unread, never taken for a rate limit."""


class PermissionDenied(AgentQError):
    """Authenticated, but not allowed to do this."""


class NotFound(AgentQError):
    """No such resource for the caller's tenant."""


class Conflict(AgentQError):
    """The resource is in a state that forbids the request."""


class AlreadyExists(Conflict):
    """The resource (e.g. an idempotency key) exists with other content."""


class ResourceExhausted(AgentQError):
    """A rate limit or a cap was hit; the client may retry after `retry_after_s`."""

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: int,
        subject: str = "",
        limit: str = "",
        tenant_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.subject = subject  # who hit the quota, e.g. "tenant:acme" or "apikey:<id>"
        self.limit = limit  # which quota, in words
        self.tenant_id = tenant_id  # the caller's tenant, for the access log


class Unavailable(AgentQError):
    """A dependency (database, broker) is down; the client may retry."""


class DeadlineExceeded(AgentQError):
    """The call ran past its deadline."""


class Internal(AgentQError):
    """Anything unexpected. The message sent is always the generic one."""

    def __init__(self, message: str = "An internal error occurred") -> None:
        super().__init__(message)


INTERNAL_MESSAGE = "An internal error occurred"
UNPARSABLE_MESSAGE = "Invalid request: the message could not be parsed"
DATABASE_UNAVAILABLE = "Database unavailable"

# The one table from exception to gRPC code and ErrorInfo reason (docs/contract.md §2).
STATUS_TABLE: dict[type[AgentQError], tuple[grpc.StatusCode, str]] = {
    InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR"),
    Unauthenticated: (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHORIZED"),
    CredentialsTooLarge: (grpc.StatusCode.UNAUTHENTICATED, "REQUEST_HEADER_FIELDS_TOO_LARGE"),
    PermissionDenied: (grpc.StatusCode.PERMISSION_DENIED, "FORBIDDEN"),
    NotFound: (grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
    Conflict: (grpc.StatusCode.FAILED_PRECONDITION, "CONFLICT"),
    AlreadyExists: (grpc.StatusCode.ALREADY_EXISTS, "CONFLICT"),
    ResourceExhausted: (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED"),
    Unavailable: (grpc.StatusCode.UNAVAILABLE, "SERVICE_UNAVAILABLE"),
    DeadlineExceeded: (grpc.StatusCode.DEADLINE_EXCEEDED, "TIMEOUT"),
    Internal: (grpc.StatusCode.INTERNAL, "INTERNAL_ERROR"),
}


def status_for(error: AgentQError) -> tuple[grpc.StatusCode, str]:
    """The gRPC code and reason of an error, by its nearest class in the table."""
    for cls in type(error).__mro__:
        if cls in STATUS_TABLE:
            return STATUS_TABLE[cls]
    return STATUS_TABLE[Internal]
