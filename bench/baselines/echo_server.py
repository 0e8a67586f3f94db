"""A bare grpc.aio unary echo server: `python -m bench.baselines.echo_server`.

It answers `/bench.Echo/Echo` with the request bytes, with no interceptor and no
protobuf parsing: the floor of any grpc.aio unary service on this machine.
"""

from __future__ import annotations

import asyncio
import signal

import grpc

from rest_shim.loop import event_loop_factory

SERVICE = "bench.Echo"
METHOD = "Echo"
PATH = f"/{SERVICE}/{METHOD}"


async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    """Answer with what was sent."""
    return request


def add_echo_service(server: grpc.aio.Server) -> None:
    """Register the echo method (raw bytes in and out) on a server."""
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),)
    )


async def serve() -> None:
    """Serve on a free loopback port until SIGTERM/SIGINT; print the port."""
    server = grpc.aio.server()
    add_echo_service(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"echo gRPC listening on port {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1)


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(serve())
