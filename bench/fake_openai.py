"""A fake OpenAI-compatible chat-completions server for loopback: slow, streamed, counted.

It stands in for a model provider in the benchmark and the end-to-end tests. Its server
(bench/fake_openai_server.py) runs on raw asyncio streams with a minimal HTTP/1.1 parser
(keep-alive, Content-Length bodies), so one core serves thousands of concurrent slow requests.

`POST /v1/chat/completions` waits `delay_s`, then answers `Echo: <prompt>` (the prompt is
the last "user" message), padded with dots to at least `chunks` characters. Streamed
(`"stream": true`) it sends that text as `chunks` SSE deltas, then a usage chunk when
`stream_options.include_usage` is set, then `[DONE]`; otherwise one JSON body. Token
counts are words: of every message for the prompt, of the answer for the completion.
Directives in the prompt override the defaults for one request: `[delay=5]`,
`[chunks=200]`, `[status=503]` (an OpenAI error body with that status, after the delay).

`GET /stats` answers the counters as JSON and `POST /reset` zeroes them; `stats()` and
`reset()` do the same in process. A client that closes its connection before the answer
is fully sent counts as a disconnect, and the request stops at once.

In process: `with FakeOpenAI(delay_s=1) as fake: ... fake.base_url`. As a process:
`python -m bench.fake_openai --delay 2 --chunks 4 --port 0` prints
`fake-openai listening on port N` and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import threading
from types import TracebackType
from typing import Any

from bench.fake_openai_server import ChatServer, Counters
from rest_shim.loop import event_loop_factory


class FakeOpenAI:
    """The fake server on its own event loop in a daemon thread, for tests and benchmarks."""

    def __init__(
        self, *, delay_s: float = 0.0, chunks: int = 4, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.host = host
        self.port = port
        self._counters = Counters()
        self._server = ChatServer(delay_s=delay_s, chunks=chunks, counters=self._counters)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The URL an OpenAI client takes as its base: `http://host:port/v1`."""
        return f"http://{self.host}:{self.port}/v1"

    def stats(self) -> dict[str, Any]:
        """The counters, as `GET /stats` answers them."""
        return self._counters.snapshot()

    def reset(self) -> None:
        """Zero the counters (requests still running stay in flight)."""
        self._counters.reset()

    def start(self) -> None:
        """Start serving; returns once the port is bound."""
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = event_loop_factory()()
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name="fake-openai", daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]

    def stop(self) -> None:
        """Drop every connection, stop the loop and wait for its thread."""
        if self._loop is None or self._thread is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        self._thread = None

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        assert self._loop is not None
        try:
            self._loop.run_until_complete(self._main(ready))
        except BaseException as exc:  # reported to start(), which re-raises it
            failure.append(exc)
            ready.set()
        finally:
            self._loop.close()

    async def _main(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        self.port = await self._server.start(self.host, self.port)
        ready.set()
        await self._stop.wait()
        await self._server.close()

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


async def _serve_until_signal(args: argparse.Namespace) -> None:
    server = ChatServer(delay_s=args.delay, chunks=args.chunks, counters=Counters())
    port = await server.start(args.host, args.port)
    print(f"fake-openai listening on port {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def main(argv: list[str] | None = None) -> None:
    """`python -m bench.fake_openai`: serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m bench.fake_openai", description=__doc__)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--chunks", type=int, default=4, help="SSE deltas per streamed answer")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=event_loop_factory()) as runner,
    ):
        runner.run(_serve_until_signal(args))


if __name__ == "__main__":
    main()
