"""The REST shim's side of tracing: a server span per request, on both lanes.

The command line installs tracing (server/tracing.py, README.md Tracing) and hands the
tracer provider to `http_server`; the shim never decides it. Wrapping the whole ASGI app
covers the fast lane (hot_routes.py) and FastAPI's routes alike, and the gRPC call a
request makes is its child: the instrumented grpc.aio channel sends the traceparent in
its metadata.
"""

from __future__ import annotations

import re
from typing import Any

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.types import ASGIApp

# Ids in a path (UUIDs, a context's name is not one) become `{id}`: span names stay few.
_ID = re.compile(r"/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def span_details(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A request span's name, `METHOD /path/{id}`, and no further attributes."""
    path = _ID.sub("/{id}", scope.get("path", ""))
    return f"{scope.get('method', 'HTTP')} {path}", {}


def traced(app: ASGIApp, provider: Any) -> ASGIApp:
    """The app inside OpenTelemetry's ASGI middleware, on `provider`."""
    return OpenTelemetryMiddleware(
        app,
        default_span_details=span_details,
        tracer_provider=provider,
        # A span per body chunk sent or received would outnumber the request's own.
        exclude_spans=["receive", "send"],
    )
