"""The REST shim's Prometheus metrics: each request counted and timed, once it is answered.

The shim never imports the server, so its metrics are defined here; the process that hosts
it serves them with the server's (README.md, Metrics). A request is recorded by its access
line's writer (`access_log.log_request`), the one place every answer passes.

A label set's child is looked up in prometheus-client once and kept here, so a request
costs a dict lookup, an increment and a histogram bucket search. The labels stay few: a
path no route matched is `unmatched` and an unusual method `other`, so a scanner cannot
add a series per path it tries. A process that serves no metrics records none:
`set_recording(False)`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

# Most answers take a millisecond or two; an SSE stream stays open for minutes.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})

_REQUESTS = Counter(
    "agentq_http_requests",
    "REST requests answered, by method, route template and HTTP status.",
    ["method", "route", "status"],
)
_DURATION = Histogram(
    "agentq_http_request_duration_seconds",
    "Time from a REST request's arrival to its answer, by method, route template and status.",
    ["method", "route", "status"],
    buckets=BUCKETS,
)
_bound: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_recording = True


def set_recording(on: bool) -> None:
    """Record requests, or (in a process that serves no metrics) nothing."""
    global _recording
    _recording = on


def request(method: str, route: str | None, status: int, duration_s: float) -> None:
    """One answered request; `route` is its route template, None when no route matched."""
    if not _recording:
        return
    key = (method if method in _METHODS else "other", route or UNMATCHED, status)
    bound = _bound.get(key)
    if bound is None:
        labels = (key[0], key[1], str(status))
        bound = _bound[key] = (_REQUESTS.labels(*labels), _DURATION.labels(*labels))
    bound[0].inc()
    bound[1].observe(duration_s)
