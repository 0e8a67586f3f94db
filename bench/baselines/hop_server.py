"""A bare FastAPI route making one grpc.aio call: `python -m bench.baselines.hop_server`.

`POST /hop` parses a JSON body `{"prompt": str}` with pydantic, sends the prompt to a
gRPC echo in one unary call, and answers `{"echo": ...}`. Like `agentq serve`, the
process hosts both the HTTP server and the echo gRPC server on one event loop, and
the route reaches the echo over loopback; `--echo-target HOST:PORT` calls an
external echo instead. uvicorn runs with the shim's own settings (no access log).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

import grpc
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from bench.baselines.echo_server import PATH, add_echo_service
from rest_shim.loop import event_loop_factory


class HopBody(BaseModel):
    """The request body."""

    prompt: str


def create_app(channel: grpc.aio.Channel) -> FastAPI:
    """The one-route app, calling the echo over `channel`."""
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(PATH)
    app = FastAPI()

    @app.post("/hop")
    async def hop(body: HopBody) -> dict[str, Any]:
        reply: bytes = await call(body.prompt.encode("utf-8"), timeout=10)
        return {"echo": reply.decode("utf-8")}

    return app


class _HostedServer(uvicorn.Server):
    """uvicorn leaving signals to this program, as the shim does inside `agentq serve`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


async def serve(echo_target: str | None) -> None:
    """Serve until SIGTERM/SIGINT; print the HTTP port."""
    echo_server = None
    if echo_target is None:
        echo_server = grpc.aio.server()
        add_echo_service(echo_server)
        echo_target = f"127.0.0.1:{echo_server.add_insecure_port('127.0.0.1:0')}"
        await echo_server.start()
    channel = grpc.aio.insecure_channel(echo_target)
    config = uvicorn.Config(
        create_app(channel), host="127.0.0.1", port=0, log_config=None, access_log=False
    )
    http = _HostedServer(config)
    task = asyncio.create_task(http.serve())
    while not http.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = http.servers[0].sockets[0].getsockname()[1]
    print(f"hop REST listening on port {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    http.should_exit = True
    await task
    await channel.close()
    if echo_server is not None:
        await echo_server.stop(grace=1)


def main() -> None:
    """Parse the arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--echo-target", help="call this echo server instead of an in-process one")
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(serve(parser.parse_args().echo_target))


if __name__ == "__main__":
    main()
