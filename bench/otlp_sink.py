"""An OTLP/gRPC trace receiver that counts what it is sent, for `--tracing` runs.

`python -m bench.otlp_sink` serves the collector's `TraceService/Export` on a free
loopback port, prints `otlp sink listening on port N`, and, when stopped, the number of
spans it received. The traced processes export to it as they would to a collector, so
the run measures their whole cost of tracing: making spans and sending them.
"""

from __future__ import annotations

import asyncio
import signal

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class _Sink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[
            trace_service_pb2.ExportTraceServiceRequest,
            trace_service_pb2.ExportTraceServiceResponse,
        ],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans += len(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def _serve() -> None:
    sink = _Sink()
    server = grpc.aio.server()
    # The stubs of opentelemetry-proto carry no annotations.
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"otlp sink listening on port {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1)
    print(f"otlp sink received {sink.spans} spans", flush=True)


if __name__ == "__main__":
    asyncio.run(_serve())
