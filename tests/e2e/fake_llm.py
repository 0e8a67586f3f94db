"""A real HTTP server on a free local port that speaks OpenAI chat completions, scripted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer: an HTTP status and body, after an optional delay."""

    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    delay_s: float = 0.0

    @classmethod
    def answer(cls, text: str, tokens: int, *, delay_s: float = 0.0) -> Reply:
        message = {"role": "assistant", "content": text}
        return cls(
            200, {"choices": [{"message": message}], "usage": {"total_tokens": tokens}}, delay_s
        )

    @classmethod
    def error(cls, status: int, message: str) -> Reply:
        return cls(status, {"error": {"message": message}})


class FakeLLM:
    """Answers requests with the scripted replies in order, then repeats the last."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = replies
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(body)
            index = min(len(self.requests), len(self.replies)) - 1
            return self.replies[index]


@contextmanager
def fake_llm(replies: list[Reply]) -> Iterator[tuple[FakeLLM, str]]:
    """Serve the script on 127.0.0.1:<free port>; yields it and its base URL."""
    llm = FakeLLM(replies)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            reply = llm.next_reply(json.loads(self.rfile.read(length)))
            time.sleep(reply.delay_s)
            payload = json.dumps(reply.body).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout), which the test wanted

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield llm, f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
