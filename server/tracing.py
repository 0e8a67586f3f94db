"""OpenTelemetry tracing: one trace per execution, off unless configured (README.md, Tracing).

Off (no OTLP endpoint, no `AGENTQ_TRACING=on`), nothing is installed: no tracer provider,
no interceptor, no middleware, and `enabled()` is False, so every span helper of agentq
returns before it touches OpenTelemetry and the hot paths pay one flag test.

On, `install` builds a tracer provider from the standard `OTEL_*` variables (the OTLP
exporter's endpoint and headers, the batch processor's delays, the sampler, the
resource), and instruments grpc.aio servers and channels, which carry the W3C
`traceparent` in gRPC metadata. The job row keeps the submitter's `traceparent`
(`current_traceparent`), so each attempt's spans join the submitter's trace wherever and
whenever a worker claims the job.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject

# Variables that turn tracing on: an OTLP endpoint (all signals or traces alone), besides
# agentq's own switch (AGENTQ_TRACING, the settings' `tracing`), which exports to the OTLP
# default (localhost:4317).
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# The instrumentation scope of agentq's own spans.
TRACER_NAME = "agentq"

_installed: Installed | None = None


def wanted(switch: bool, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the switch or an endpoint asks for tracing (OTEL_SDK_DISABLED=true wins)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return switch or any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def enabled() -> bool:
    """True once `install` has installed tracing in this process."""
    return _installed is not None


def tracer() -> trace.Tracer:
    """agentq's tracer on the installed provider (a no-op one when tracing is off)."""
    if _installed is None:
        return trace.NoOpTracer()
    return _installed.tracer


@dataclass
class Installed:
    """What `install` set up, and how to take it down again (tests do)."""

    provider: Any  # opentelemetry.sdk.trace.TracerProvider
    tracer: trace.Tracer
    instrumentors: list[Any]

    def uninstall(self) -> None:
        """Remove the instrumentation and flush and stop the provider's exporters."""
        global _installed
        for instrumentor in self.instrumentors:
            instrumentor.uninstrument()
        self.provider.shutdown()
        if _installed is self:
            _installed = None


def install(process: str, *, switch: bool = False, exporter: Any = None) -> Installed | None:
    """Install tracing for a process of kind `process` (serve, rest, worker) if wanted:
    by `switch` (AGENTQ_TRACING) or an OTLP endpoint in the environment.

    `exporter` replaces the OTLP exporter and is called on each span as it ends (tests
    pass the SDK's in-memory exporter); given, tracing is on whatever the environment
    says. Called again, it returns what the first call installed.
    """
    global _installed
    if _installed is not None:
        return _installed
    if exporter is None and not wanted(switch):
        return None
    # Imported only when tracing is on: the SDK and the exporter cost a process that
    # does not trace nothing at all.
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read here; without a service
    # name from either, the SDK's `unknown_service` becomes `agentq`.
    resource = Resource.create({"agentq.process": process})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "agentq"}))
    # The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on).
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # Endpoint, headers, TLS and timeout come from OTEL_EXPORTER_OTLP_*, the batch's
        # delay and size from OTEL_BSP_*; shutdown (at exit) flushes what is left.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    instrumentors: list[Any] = [GrpcAioInstrumentorServer(), GrpcAioInstrumentorClient()]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
    _installed = Installed(provider, provider.get_tracer(TRACER_NAME), instrumentors)
    return _installed


def provider() -> Any:
    """The installed tracer provider (for the REST shim's middleware); None when off."""
    return None if _installed is None else _installed.provider


# What every span helper returns when tracing is off: one shared block that does nothing.
OFF: contextlib.AbstractContextManager[None] = contextlib.nullcontext()


def span(
    name: str,
    *,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    parent: otel_context.Context | None = None,
) -> contextlib.AbstractContextManager[trace.Span | None]:
    """A span of agentq's, current inside the block (under `parent` if given); off, None."""
    if _installed is None:
        return OFF
    return _installed.tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=attributes
    )


def message_span(job_id: str) -> contextlib.AbstractContextManager[trace.Span | None]:
    """The span of handing a queued job's message to the sender."""
    return span("job.enqueue", kind=trace.SpanKind.PRODUCER, attributes={"agentq.job_id": job_id})


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, to store with a job; None when off."""
    if _installed is None:
        return None
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """The trace context a stored traceparent names; None without one."""
    if traceparent is None:
        return None
    return extract({"traceparent": traceparent})


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id (32 hex digits) of a W3C traceparent, `00-<trace>-<span>-<flags>`."""
    if traceparent is None:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None
