"""One access line per gRPC call, on the `agentq.access` logger beside the REST lines,
and the call counted in the metrics (server/metrics.py).

The fields are attached to the record too, so the JSON log format writes each as a key.
Raising the logger's level (AGENTQ_LOG_LEVELS=agentq.access=WARNING) silences them.
"""

from __future__ import annotations

import logging

from server import logs, metrics
from server.api.context import request_id_var

ACCESS_LOGGER = "agentq.access"
# The caller's tenant, in the trailers of a call it was admitted to, so a REST shim in
# another process can name it in its own access line. Binary (`-bin`): a tenant is any
# text a token's `sub` holds, and plain metadata takes printable ASCII only.
TENANT_TRAILER = "x-tenant-id-bin"
# Sent by the REST shim with every call: only a caller that asks gets TENANT_TRAILER, as
# the extra binary trailer cost each call some 18 us of server CPU (a GetJob is ~450 us).
TENANT_WANTED = "x-agentq-want-tenant"

log = logging.getLogger(ACCESS_LOGGER)


def log_call(method: str, *, code: str, duration_s: float, tenant: str | None) -> None:
    """Log one finished call: `grpc /agentq.v1.JobService/GetJob OK 0.8ms tenant=t`, and
    count it in the metrics.

    Only the values are taken here; the writer thread spells out the line (`logs.later`).
    """
    metrics.grpc_call(method, code, duration_s)
    logs.later(log, logging.INFO, _line, method, code, duration_s, tenant, request_id_var.get())


def _line(
    method: str, code: str, duration_s: float, tenant: str | None, request_id: str
) -> logs.Line:
    duration_ms = round(duration_s * 1000, 1)
    shown = tenant if tenant is not None else "-"
    fields = {
        "protocol": "grpc",
        "rpc": method,
        "code": code,
        "duration_ms": duration_ms,
        "request_id": request_id,
        "tenant": shown,
    }
    return "grpc %s %s %.1fms tenant=%s", (method, code, duration_ms, shown), fields
