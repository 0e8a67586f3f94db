"""One access line per REST request, on the `agentq.access` logger, and its count in the
metrics (rest_shim/metrics.py).

The line's fields are also attached to the log record, so the JSON log format
(AGENTQ_LOG_FORMAT=json) writes each as its own key. Operators silence these lines by
raising the logger's level (AGENTQ_LOG_LEVELS=agentq.access=WARNING).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rest_shim import metrics

ACCESS_LOGGER = "agentq.access"
# The trailer in which the gRPC server names the tenant it admitted the call for
# (server/api/call_log.py; the shim never imports the server).
TENANT_TRAILER = "x-tenant-id-bin"
# Asks the server for that trailer; it names the tenant only to callers that ask.
TENANT_WANTED = "x-agentq-want-tenant"
# A path no route matched is logged as sent, cut to this length.
_MAX_PATH = 200
log = logging.getLogger(ACCESS_LOGGER)

# A line: its message, the message's arguments and its fields.
Line = tuple[str, tuple[Any, ...], dict[str, Any]]
# How a line reaches logging: (logger, level, the function that spells the line out from
# the values that follow, values...).
Write = Callable[..., None]


def _at_once(logger: logging.Logger, level: int, line: Callable[..., Line], *values: Any) -> None:
    if logger.isEnabledFor(level):
        msg, args, fields = line(*values)
        logger.log(level, msg, *args, extra=fields)


_write: Write = _at_once


def use(write: Write) -> None:
    """Hand lines to `write` from now on: the process hosting the shim may keep them for
    its log writer rather than make a record on every request (agentq's commands do)."""
    global _write
    _write = write


def tenant_from(trailers: Iterable[tuple[str, Any]] | None) -> str | None:
    """The tenant the server named in a call's trailers, if it named one."""
    for key, value in trailers or ():
        if key == TENANT_TRAILER and isinstance(value, bytes):
            return value.decode("utf-8", "replace")
    return None


def route_template(scope: Mapping[str, Any]) -> str | None:
    """The route template that served a request; None when no route matched."""
    template = scope.get("state", {}).get("route")
    if template is None:
        template = getattr(scope.get("route"), "path", None)
    return None if template is None else str(template)


def route_of(scope: Mapping[str, Any]) -> str:
    """The route template that served a request, else its path as sent (without query)."""
    template = route_template(scope)
    if template is not None:
        return template
    # The raw path: still percent-encoded, so it holds no space or line break.
    raw = scope.get("raw_path") or scope.get("path", "").encode()
    return bytes(raw).decode("latin-1")[:_MAX_PATH]


def log_request(
    *,
    method: str,
    route: str,
    status: int,
    duration_s: float,
    request_id: str,
    tenant: str,
    matched: bool = True,
) -> None:
    """Log one finished request: `http GET /api/v1/jobs/{job_id} 200 1.2ms tenant=t`, and
    count it in the metrics (`matched`: `route` is a route template, not a path as sent)."""
    metrics.request(method, route if matched else None, status, duration_s)
    _write(log, logging.INFO, _line, method, route, status, duration_s, request_id, tenant)


def _line(
    method: str, route: str, status: int, duration_s: float, request_id: str, tenant: str
) -> Line:
    duration_ms = round(duration_s * 1000, 1)
    fields = {
        "protocol": "http",
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": duration_ms,
        "request_id": request_id,
        "tenant": tenant,
    }
    return "http %s %s %d %.1fms tenant=%s", (method, route, status, duration_ms, tenant), fields
