"""Running the shim under uvicorn: alone (`agentq rest`) or beside the gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from rest_shim.app import create_app
from rest_shim.loop import event_loop_factory
from rest_shim.protocol import ContractHttpProtocol
from rest_shim.settings import RestSettings


class ListenError(Exception):
    """The shim's address cannot be listened on; the message says which and why."""


def listen_socket(settings: RestSettings) -> socket.socket:
    """A socket bound to AGENTQ_HTTP_ADDR, for uvicorn to listen on.

    Bound here rather than by uvicorn, which logs a failure and exits the process.
    """
    host, port = settings.http_host_port
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        reason = (os.strerror(error.errno) if error.errno else str(error)).lower()
        raise ListenError(f"cannot listen on {settings.http_addr}: {reason}") from None
    return sock


class EmbeddedHttpServer(uvicorn.Server):
    """A uvicorn server that leaves signals to its host process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The host (`agentq serve`) owns SIGINT/SIGTERM and stops this server
        # by setting should_exit, so uvicorn must not install its own handlers.
        yield

    @property
    def port(self) -> int:
        """The bound port (useful when asked for port 0)."""
        return int(self.servers[0].sockets[0].getsockname()[1])


def http_server(
    settings: RestSettings, *, embedded: bool, tracer_provider: Any = None
) -> uvicorn.Server:
    """A uvicorn server for the shim app at AGENTQ_HTTP_ADDR; traced given a provider."""
    host, port = settings.http_host_port
    app: ASGIApp = create_app(settings)
    if tracer_provider is not None:
        from rest_shim.tracing import traced

        app = traced(app, tracer_provider)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        # rest_shim/middleware.py writes the access lines, with route, tenant and request id.
        access_log=False,
        # Naming the server software tells a scanner which bugs to try, and no client needs it.
        server_header=False,
        http=ContractHttpProtocol,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return EmbeddedHttpServer(config) if embedded else uvicorn.Server(config)


def run_rest(settings: RestSettings, *, tracer_provider: Any = None) -> None:
    """Serve the shim until SIGINT/SIGTERM, then stop cleanly (exit status 0).

    Raises ListenError when AGENTQ_HTTP_ADDR cannot be listened on.
    """
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(_serve_until_signalled(settings, tracer_provider))


async def _serve_until_signalled(settings: RestSettings, tracer_provider: Any) -> None:
    sock = listen_socket(settings)
    server = http_server(settings, embedded=True, tracer_provider=tracer_provider)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, setattr, server, "should_exit", True)
    print(
        f"agentq REST listening on {settings.http_addr}, calling gRPC at {settings.target}",
        flush=True,
    )
    await server.serve(sockets=[sock])
