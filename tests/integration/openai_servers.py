"""Chat-completions servers on loopback for the OpenAI-compatible provider's tests.

A scripted server, whose next answer each test writes (error bodies, broken streams),
and helpers that call the provider against it or against the benchmark's fake.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from server.providers.base import Completion, ProviderError
from server.providers.openai_compat import OpenAICompatibleProvider

API_KEY = "sk-test-0123456789abcdef"
MODEL = "test-model"
SYSTEM = "You are a translator."
PROMPT = "Say hello in French"
SSE = "text/event-stream"

OK_BODY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Bonjour"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 21, "completion_tokens": 2, "total_tokens": 23},
}


def delta(text: str | None) -> dict[str, Any]:
    """A stream chunk that carries `text` as the answer's next piece."""
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def sse(*chunks: Any, done: bool = True) -> str:
    """An event stream of `chunks` as JSON, then `[DONE]` unless told otherwise."""
    events = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks]
    if done:
        events.append("data: [DONE]\n\n")
    return "".join(events)


ROLE_CHUNK = {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}
USAGE_CHUNK = {"choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": 2}}
OK_STREAM = sse(ROLE_CHUNK, delta("Bon"), delta("jour"), USAGE_CHUNK)


@dataclass
class Received:
    """One request the scripted server got."""

    path: str
    headers: dict[str, str]
    body: Any
    client_port: int


@dataclass
class ScriptedServer:
    """A chat-completions server whose next answers each test scripts."""

    base_url: str = ""
    status: int = 200
    content: bytes = b""
    content_type: str = SSE
    delay_s: float = 0.0
    # Cut the connection after sending the content, without ending the body.
    cut: bool = False
    received: list[Received] = field(default_factory=list)

    def answer(self, status: int, body: Any) -> None:
        """Answer every request with `status` and `body` as JSON."""
        self.answer_raw(status, json.dumps(body), content_type="application/json")

    def answer_raw(self, status: int, text: str, *, content_type: str = "text/plain") -> None:
        """Answer every request with `status` and `text` as is."""
        self.status = status
        self.content = text.encode()
        self.content_type = content_type

    def reset(self) -> None:
        """Back to streaming "Bonjour" at once with usage, with nothing received yet."""
        self.answer_raw(200, OK_STREAM, content_type=SSE)
        self.delay_s = 0.0
        self.cut = False
        self.received.clear()


def _app(scripted: ScriptedServer) -> FastAPI:
    """The FastAPI app that records requests and plays the script."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        raw = await request.body()
        port = request.client.port if request.client else 0
        scripted.received.append(
            Received(request.url.path, dict(request.headers), json.loads(raw), port)
        )
        if scripted.delay_s:
            await asyncio.sleep(scripted.delay_s)
        if scripted.cut:
            return StreamingResponse(_cut_short(scripted.content), media_type=SSE)
        return Response(
            scripted.content, status_code=scripted.status, media_type=scripted.content_type
        )

    return app


async def _cut_short(content: bytes) -> AsyncIterator[bytes]:
    """Send `content`, then fail: the server drops the connection mid-body."""
    yield content
    raise ConnectionAbortedError("the scripted server cuts the stream")


@contextmanager
def running_scripted_server() -> Iterator[ScriptedServer]:
    """A real HTTP server on a free local port, stopped on exit."""
    scripted = ScriptedServer()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    scripted.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    # The cut stream is an error uvicorn would log with a traceback.
    config = uvicorn.Config(_app(scripted), log_level="critical", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the scripted chat-completions server did not start")
        time.sleep(0.01)
    yield scripted
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


def make_provider(
    base_url: str,
    *,
    api_key: str | None = API_KEY,
    timeout_s: float = 5,
    max_connections: int = 8,
) -> OpenAICompatibleProvider:
    """A provider of the test model at `base_url`."""
    return OpenAICompatibleProvider(
        base_url=base_url,
        api_key=api_key,
        model=MODEL,
        timeout_s=timeout_s,
        max_connections=max_connections,
    )


def complete(
    provider: OpenAICompatibleProvider, *, prompt: str = PROMPT, deltas: list[str] | None = None
) -> Completion:
    """One call on a fresh event loop, closing the provider's client after it."""

    async def call() -> Completion:
        try:
            sink = deltas.append if deltas is not None else None
            return await provider.complete(system=SYSTEM, prompt=prompt, on_delta=sink)
        finally:
            await provider.aclose()

    return asyncio.run(call())


def failure(provider: OpenAICompatibleProvider, *, prompt: str = PROMPT) -> ProviderError:
    """The ProviderError one call raises."""
    with pytest.raises(ProviderError) as caught:
        complete(provider, prompt=prompt)
    return caught.value
