"""The one error body of docs/contract.md §2, from google.rpc.Status details or shim checks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from fastapi.responses import JSONResponse
from google.rpc import error_details_pb2
from grpc_status import rpc_status

INTERNAL_MESSAGE = "An internal error occurred"

# The FastAPI `loc` of a request message's field, e.g. ["query", "tenant_id"].
Locate = Callable[[str], list[str]]

# HTTP status of each error code of docs/contract.md §2.
HTTP_STATUS = {
    "BAD_REQUEST": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "CONFLICT": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "VALIDATION_ERROR": 422,
    "RATE_LIMITED": 429,
    "REQUEST_HEADER_FIELDS_TOO_LARGE": 431,
    "INTERNAL_ERROR": 500,
    "SERVICE_UNAVAILABLE": 503,
    "TIMEOUT": 504,
}

# The code of a gRPC status that came without an ErrorInfo (e.g. from the
# channel itself when the server is down), with the message sent instead.
# RESOURCE_EXHAUSTED is not among them: agentq's limits always say so in an
# ErrorInfo, so one without is a transport limit (metadata or message size),
# which no retry mends, and never a 429.
_BY_GRPC_CODE: dict[grpc.StatusCode, tuple[str, str]] = {
    grpc.StatusCode.UNAVAILABLE: ("SERVICE_UNAVAILABLE", "Service unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: ("TIMEOUT", "Request timed out"),
    grpc.StatusCode.UNAUTHENTICATED: ("UNAUTHORIZED", "Unauthorized"),
    grpc.StatusCode.PERMISSION_DENIED: ("FORBIDDEN", "Insufficient permissions"),
    grpc.StatusCode.NOT_FOUND: ("NOT_FOUND", "Not found"),
    grpc.StatusCode.INVALID_ARGUMENT: ("VALIDATION_ERROR", "Invalid request"),
    grpc.StatusCode.FAILED_PRECONDITION: ("CONFLICT", "Conflict"),
    grpc.StatusCode.ABORTED: ("CONFLICT", "Conflict"),
    grpc.StatusCode.ALREADY_EXISTS: ("CONFLICT", "Conflict"),
}


def error_response(
    code: str,
    message: str,
    *,
    detail: str | Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """`{"detail", "error": {"code", "message", "status"}}` with the code's HTTP status."""
    status = HTTP_STATUS[code]
    body = {
        "detail": message if detail is None else detail,
        "error": {"code": code, "message": message, "status": status},
    }
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def rpc_error_parts(error: grpc.aio.AioRpcError) -> tuple[str, str, list[dict[str, Any]] | None]:
    """The code, message and (for field violations) detail list of a failed RPC."""
    code, message, detail, _ = _read_status(error)
    return code, message, detail


def _read_status(
    error: grpc.aio.AioRpcError, locate: Locate | None = None
) -> tuple[str, str, list[dict[str, Any]] | None, str | None]:
    # One pass over the google.rpc.Status details: code, message, field
    # violations, and the RetryInfo delay as a Retry-After value. `locate`
    # says where the request sent each field; without it, the body.
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    reason, violations, retry_after = None, [], None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason if info.reason in HTTP_STATUS else None
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = list(bad.field_violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = str(max(1, retry.retry_delay.seconds))
    if reason is None:
        # Not from agentq (the channel failed, or a proxy answered): never
        # pass its text on, it may name hosts or internals.
        reason, message = _BY_GRPC_CODE.get(error.code(), ("INTERNAL_ERROR", INTERNAL_MESSAGE))
    else:
        message = error.details() or INTERNAL_MESSAGE
    if reason == "INTERNAL_ERROR":
        message = INTERNAL_MESSAGE
    if reason == "VALIDATION_ERROR" and violations:
        where = locate or _in_body
        detail = [
            {"loc": where(v.field), "msg": v.description, "type": "value_error"} for v in violations
        ]
        return reason, violations[0].description, detail, retry_after
    return reason, message, None, retry_after


def _in_body(field: str) -> list[str]:
    return ["body", field]


RATE_HEADERS = {
    "x-ratelimit-limit": "X-RateLimit-Limit",
    "x-ratelimit-remaining": "X-RateLimit-Remaining",
    "x-ratelimit-reset": "X-RateLimit-Reset",
}


def rate_headers(metadata: Sequence[tuple[str, str | bytes]]) -> dict[str, str]:
    """The rate-limit headers the server reported in a call's trailers."""
    return {
        RATE_HEADERS[key]: value
        for key, value in metadata
        if key in RATE_HEADERS and isinstance(value, str)
    }


def from_rpc_error(error: grpc.aio.AioRpcError, *, locate: Locate | None = None) -> JSONResponse:
    """The error response of a failed RPC, from its google.rpc.Status details.

    `locate` gives the `loc` of each refused field: where the request sent it.
    """
    code, message, detail, retry_after = _read_status(error, locate)
    headers = rate_headers(tuple(error.trailing_metadata() or ()))
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    elif code in ("SERVICE_UNAVAILABLE", "RATE_LIMITED"):
        headers["Retry-After"] = "1"
    return error_response(code, message, detail=detail, headers=headers)
