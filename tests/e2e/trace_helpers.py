"""What the tracing tests share: spans as plain values, their tree, and an OTLP receiver.

`OtlpReceiver` is a real protocol peer: the OpenTelemetry collector's
`TraceService/Export` over gRPC, served from the opentelemetry-proto package's stubs, on
a free loopback port. The processes under test export to it with their own OTLP exporter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan

TIMEOUT_S = 30


@dataclass(frozen=True)
class Span:
    """One finished span: its ids as hex, its name and kind, and the process it came from."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    kind: str
    process: str
    attributes: dict[str, Any] = field(default_factory=dict)


def from_sdk(span: ReadableSpan) -> Span:
    """A span the SDK's in-memory exporter kept."""
    context = span.context
    assert context is not None
    parent = span.parent
    return Span(
        name=span.name,
        trace_id=f"{context.trace_id:032x}",
        span_id=f"{context.span_id:016x}",
        parent_id=None if parent is None else f"{parent.span_id:016x}",
        kind=span.kind.name,
        process=str(span.resource.attributes.get("agentq.process", "")),
        attributes=dict(span.attributes or {}),
    )


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind is not None else None


# OTLP's Span.SpanKind numbers, as the SDK names them.
_KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def from_otlp(request: trace_service_pb2.ExportTraceServiceRequest) -> list[Span]:
    """The spans of one OTLP export."""
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    Span(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex() or None,
                        kind=_KINDS.get(span.kind, str(span.kind)),
                        process=str(resource.get("agentq.process", "")),
                        attributes={a.key: _value(a.value) for a in span.attributes},
                    )
                )
    return spans


class Tree:
    """Spans by id, to walk from one to its ancestors."""

    def __init__(self, spans: Iterable[Span]) -> None:
        self.spans = list(spans)
        self._by_id = {span.span_id: span for span in self.spans}

    def named(self, name: str) -> list[Span]:
        return [span for span in self.spans if span.name == name]

    def one(self, name: str) -> Span:
        found = self.named(name)
        assert len(found) == 1, (name, [s.name for s in self.spans])
        return found[0]

    def parent(self, span: Span) -> Span:
        assert span.parent_id is not None, f"{span.name} is a root"
        parent = self._by_id.get(span.parent_id)
        assert parent is not None, f"the parent of {span.name} was not exported"
        return parent

    def ancestry(self, span: Span) -> list[str]:
        """The names from `span` up to its trace's root, as `name@process`."""
        names = [f"{span.name}@{span.process}"]
        while span.parent_id is not None:
            span = self.parent(span)
            names.append(f"{span.name}@{span.process}")
        return names


def wait_spans(
    read: Callable[[], Sequence[Span]], done: Callable[[Tree], bool], *, timeout_s: float = 30
) -> Tree:
    """Poll `read` until `done` holds for the spans read; the tree of them."""
    deadline = time.monotonic() + timeout_s
    while True:
        tree = Tree(read())
        if done(tree):
            return tree
        names = sorted(span.name for span in tree.spans)
        assert time.monotonic() < deadline, f"spans still incomplete: {names}"
        time.sleep(0.05)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receiver.add(from_otlp(request))
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """An OTLP/gRPC trace receiver on a free loopback port, keeping what it is sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _TraceService(self), self._server
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        """What OTEL_EXPORTER_OTLP_ENDPOINT is set to."""
        return f"http://127.0.0.1:{self.port}"

    def add(self, spans: list[Span]) -> None:
        with self._lock:
            self._spans.extend(spans)

    def spans(self) -> list[Span]:
        """Every span received so far."""
        with self._lock:
            return list(self._spans)

    def __enter__(self) -> OtlpReceiver:
        self._server.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.stop(grace=None)
