"""One access line per REST request, on the `agentq.access` logger.

The line's fields are also attached to the log record, so the JSON log format
(AGENTQ_LOG_FORMAT=json) writes each as its own key. Operators silence these lines by
raising the logger's level (AGENTQ_LOG_LEVELS=agentq.access=WARNING).
"""

from __future__ import annotations

import logging

ACCESS_LOGGER = "agentq.access"
log = logging.getLogger(ACCESS_LOGGER)


def log_request(
    *, method: str, route: str, status: int, duration_s: float, request_id: str, tenant: str
) -> None:
    """Log one finished request: `http GET /api/v1/jobs/{job_id} 200 1.2ms tenant=t`."""
    if not log.isEnabledFor(logging.INFO):
        return
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
    log.info(
        "http %s %s %d %.1fms tenant=%s", method, route, status, duration_ms, tenant, extra=fields
    )
