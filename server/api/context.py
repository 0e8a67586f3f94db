"""Per-call state the interceptor sets for the servicers: the caller and the request id."""

from __future__ import annotations

import contextvars
from typing import Any

import grpc

from server.auth.principal import Principal
from server.logs import request_id_var

__all__ = ["Context", "current_principal", "principal_var", "request_id_var"]

# The servicer context of any RPC; the message types don't matter to its users.
Context = grpc.aio.ServicerContext[Any, Any]

principal_var: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")


def current_principal() -> Principal:
    """The authenticated caller of the RPC being served."""
    return principal_var.get()
