"""Errors as the gRPC status a client reads: a code, a message and google.rpc details."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from server.errors import AgentQError, InvalidArgument, ResourceExhausted, status_for

ERROR_DOMAIN = "agentq"


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


def code_name(error: Exception, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The gRPC status code a failed call ends with, as the access line names it."""
    if isinstance(error, AgentQError):
        return status_for(error)[0].name
    if isinstance(error, grpc.aio.AbortError):
        # A servicer aborted the call itself; the context holds the code it gave.
        code = context.code()
        return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    return "INTERNAL"
