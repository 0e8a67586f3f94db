"""The HTTP server of the fake OpenAI provider (see bench/fake_openai.py for what it answers).

Raw asyncio streams with a minimal HTTP/1.1 parser (keep-alive, Content-Length bodies), so
one core serves thousands of concurrent slow requests.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import threading
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

CHAT_PATH = "/v1/chat/completions"
_HEAD_END = b"\r\n\r\n"
_DIRECTIVE = re.compile(r"\[(delay|chunks|status)=([0-9]+(?:\.[0-9]+)?)\]")
# Many clients open their connections at once; the default backlog of 100 would drop some.
_BACKLOG = 4096


class Counters:
    """What the server has seen since the last reset; read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
        self._zero()

    def _zero(self) -> None:
        self.calls = 0
        self.completed = 0
        self.disconnects = 0
        # Requests still running stay in flight across a reset, so the peak starts there.
        self.peak_in_flight = self.in_flight
        self.calls_per_prompt: collections.Counter[str] = collections.Counter()

    def reset(self) -> None:
        with self._lock:
            self._zero()

    def started(self, prompt: str) -> None:
        with self._lock:
            self.calls += 1
            self.calls_per_prompt[prompt] += 1
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def ended(self, *, completed: bool) -> None:
        with self._lock:
            self.in_flight -= 1
            if completed:
                self.completed += 1
            else:
                self.disconnects += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": self.calls,
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
                "completed": self.completed,
                "disconnects": self.disconnects,
                "calls_per_prompt": dict(self.calls_per_prompt),
            }


@dataclass(frozen=True)
class _Request:
    """One parsed HTTP request."""

    method: str
    path: str
    body: bytes
    keep_alive: bool


class _ClientGone(Exception):
    """The client closed its connection before the answer was complete."""


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str], bool]:
    """Method, path, lower-cased headers and whether the connection stays open."""
    request_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    method, target, version = request_line.split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return method, target.split("?", 1)[0], headers, keep_alive


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The next request's head, or None once the client has closed the connection."""
    try:
        return await reader.readuntil(_HEAD_END)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None


def _response_head(status: int, headers: dict[str, str]) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _json_response(status: int, body: Any, *, keep_alive: bool) -> bytes:
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(payload))}
    if not keep_alive:
        headers["Connection"] = "close"
    return _response_head(status, headers) + payload


def _sse_chunk(data: str) -> bytes:
    """One SSE event as one HTTP chunk."""
    event = f"data: {data}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(event), event)


def _words(text: Any) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _user_prompt(messages: Any) -> str:
    """The content of the last "user" message, or "" if there is none."""
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                return content if isinstance(content, str) else ""
    return ""


@dataclass(frozen=True)
class _Plan:
    """How the server answers one chat-completions request."""

    prompt: str
    delay_s: float
    chunks: int
    status: int
    stream: bool
    include_usage: bool
    prompt_tokens: int

    def text(self) -> str:
        return f"Echo: {self.prompt}".ljust(self.chunks, ".")

    def pieces(self) -> list[str]:
        """The text cut into `chunks` non-empty pieces of near-equal length."""
        text = self.text()
        size, extra = divmod(len(text), self.chunks)
        pieces, start = [], 0
        for index in range(self.chunks):
            end = start + size + (1 if index < extra else 0)
            pieces.append(text[start:end])
            start = end
        return pieces

    def usage(self) -> dict[str, int]:
        completion = _words(self.text())
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }


def _plan(body: Any, *, delay_s: float, chunks: int) -> _Plan:
    """The plan for a request body: the server's defaults, then the prompt's directives."""
    body = body if isinstance(body, dict) else {}
    messages = body.get("messages")
    prompt = _user_prompt(messages)
    status = 200
    for name, value in _DIRECTIVE.findall(prompt):
        if name == "delay":
            delay_s = float(value)
        elif name == "chunks":
            chunks = int(float(value))
        elif 200 <= float(value) <= 599:
            status = int(float(value))
    options = body.get("stream_options")
    prompt_tokens = 0
    if isinstance(messages, list):
        prompt_tokens = sum(_words(m.get("content")) for m in messages if isinstance(m, dict))
    return _Plan(
        prompt=prompt,
        delay_s=delay_s,
        chunks=max(chunks, 1),
        status=status,
        stream=body.get("stream") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        prompt_tokens=prompt_tokens,
    )


# One streamed piece of the answer, with its JSON-encoded text put in.
_DELTA_CHUNK = '{"choices":[{"index":0,"delta":{"content":%s}}]}'


class ChatServer:
    """The HTTP server itself; every method runs on its event loop."""

    def __init__(self, *, delay_s: float, chunks: int, counters: Counters) -> None:
        self.delay_s = delay_s
        self.chunks = chunks
        self.counters = counters
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen on `host:port` and return the port bound."""
        self._server = await asyncio.start_server(self._connection, host, port, backlog=_BACKLOG)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, _ClientGone):
            pass  # the client went away; the request, if any, was counted
        except asyncio.CancelledError:
            # close() cancels open connections. Ending quietly matters: asyncio logs the
            # cancellation of a connection task as an error in its own callback.
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer requests on one connection until the client closes it."""
        head = await _read_head(reader)
        while head is not None:
            method, path, headers, keep_alive = _parse_head(head)
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            # Reading the next head while answering is how a close by the client shows up.
            next_head = asyncio.ensure_future(_read_head(reader))
            try:
                await self._answer(_Request(method, path, body, keep_alive), writer, next_head)
            except BaseException:
                next_head.cancel()
                raise
            if not keep_alive:
                next_head.cancel()
                return
            head = await next_head

    async def _answer(
        self,
        request: _Request,
        writer: asyncio.StreamWriter,
        next_head: asyncio.Future[bytes | None],
    ) -> None:
        keep = request.keep_alive
        if request.method == "POST" and request.path == CHAT_PATH:
            await self._chat(request, writer, next_head)
        elif request.method == "GET" and request.path == "/stats":
            writer.write(_json_response(200, self.counters.snapshot(), keep_alive=keep))
        elif request.method == "POST" and request.path == "/reset":
            self.counters.reset()
            writer.write(_json_response(200, self.counters.snapshot(), keep_alive=keep))
        else:
            error = {"error": {"message": f"No route for {request.method} {request.path}"}}
            writer.write(_json_response(404, error, keep_alive=keep))
        await writer.drain()

    async def _chat(
        self,
        request: _Request,
        writer: asyncio.StreamWriter,
        next_head: asyncio.Future[bytes | None],
    ) -> None:
        try:
            body = json.loads(request.body)
        except ValueError:
            body = None
        plan = _plan(body, delay_s=self.delay_s, chunks=self.chunks)
        self.counters.started(plan.prompt)
        completed = False
        try:
            await self._wait(plan.delay_s, next_head)
            writer.write(self._chat_answer(plan, body, keep_alive=request.keep_alive))
            await writer.drain()
            completed = True
        finally:
            self.counters.ended(completed=completed)

    @staticmethod
    async def _wait(delay_s: float, next_head: asyncio.Future[bytes | None]) -> None:
        """Sleep `delay_s`, or raise _ClientGone as soon as the client closes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay_s
        while (left := deadline - loop.time()) > 0:
            if next_head.done():
                # A pipelined next request is not a close: sleep out the rest.
                await asyncio.sleep(left)
                return
            await asyncio.wait([next_head], timeout=left)
            if next_head.done() and next_head.result() is None:
                raise _ClientGone

    @staticmethod
    def _chat_answer(plan: _Plan, body: Any, *, keep_alive: bool) -> bytes:
        if not isinstance(body, dict):
            error = {"error": {"message": "The request body is not a JSON object"}}
            return _json_response(400, error, keep_alive=keep_alive)
        if plan.status != 200:
            error = {"error": {"message": f"Fake error {plan.status}", "type": "fake_error"}}
            return _json_response(plan.status, error, keep_alive=keep_alive)
        if not plan.stream:
            message = {"role": "assistant", "content": plan.text()}
            answer = {
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": plan.usage(),
            }
            return _json_response(200, answer, keep_alive=keep_alive)
        headers = {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked"}
        if not keep_alive:
            headers["Connection"] = "close"
        parts = [_response_head(200, headers)]
        # Only the piece is encoded per chunk: the fake must stay cheap beside what it
        # measures, and a long answer is hundreds of chunks.
        for piece in plan.pieces():
            parts.append(_sse_chunk(_DELTA_CHUNK % json.dumps(piece)))
        if plan.include_usage:
            parts.append(_sse_chunk(json.dumps({"choices": [], "usage": plan.usage()})))
        parts.append(_sse_chunk("[DONE]"))
        parts.append(b"0\r\n\r\n")
        return b"".join(parts)
