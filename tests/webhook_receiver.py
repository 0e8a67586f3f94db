"""A real HTTP receiver of webhooks for the tests: a thread serving http.server, verifying
every delivery's signature with the `standardwebhooks` library as a receiver would, and
answering 503 while it is "down" (README, Webhooks).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook

from server.auth.principal import Principal
from server.service.event_log import EventLogService
from server.service.webhook_dispatch import DispatchSettings, WebhookDispatcher
from server.service.webhooks import WebhookService
from server.store.store import Store

POLL_S = 0.05


@dataclass
class Received:
    """One request the receiver took: its webhook-id, parsed body, and whether it verified."""

    path: str
    webhook_id: str
    body: Any
    verified: bool
    # As sent, to verify with a secret other than the receiver's.
    raw: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Receiver:
    """What the server answers and what it took; `secret` verifies the signatures."""

    port: int = 0
    secret: str | None = None
    down: bool = False
    # Paths answered with a redirect to `/redirected`, which counts as any other path.
    redirect: set[str] = field(default_factory=set)
    # While cleared, every request waits for it before being answered (a slow receiver).
    answering: threading.Event = field(default_factory=threading.Event)
    # Set when a request has come in, before it waits for `answering`.
    arrived: threading.Event = field(default_factory=threading.Event)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def taken(self, path: str | None = None) -> list[Received]:
        """The requests it answered with a 2xx, of one path or all."""
        with self.lock:
            return [r for r in self.requests if path is None or r.path == path]

    def unique(self, path: str = "/hook") -> dict[str, Any]:
        """The bodies of the verified deliveries of a path, de-duplicated by webhook-id."""
        return {r.webhook_id: r.body for r in self.taken(path) if r.verified}

    def wait_for(self, check: Callable[[], bool], *, timeout_s: float = 30) -> None:
        """Poll until `check` holds; fail after a generous deadline."""
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; received {self.taken()}")
            time.sleep(POLL_S)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            receiver.arrived.set()
            receiver.answering.wait(timeout=60)
            headers = {k.lower(): v for k, v in self.headers.items()}
            if self.path in receiver.redirect:
                self._answer(302, location=receiver.url("/redirected"))
                return
            if receiver.down:
                self._answer(503)
                return
            verified = False
            body = json.loads(raw)
            if receiver.secret is not None:
                try:
                    body = Webhook(receiver.secret).verify(raw, headers)
                    verified = True
                except Exception:
                    verified = False
            with receiver.lock:
                receiver.requests.append(
                    Received(self.path, headers.get("webhook-id", ""), body, verified, raw, headers)
                )
            self._answer(200 if verified or receiver.secret is None else 401)

        def _answer(self, status: int, *, location: str | None = None) -> None:
            self.send_response(status)
            if location is not None:
                self.send_header("location", location)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    """A receiver on a free port of 127.0.0.1, stopped on exit."""
    receiver = Receiver()
    receiver.answering.set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.answering.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


async def send_one_event(
    store: Store, tenant: Principal, url: str, settings: DispatchSettings
) -> str:
    """A webhook of the tenant to `url` for every type (created where private addresses
    are allowed), one event emitted and sent by one sweep; the webhook's id."""
    webhook, _ = await WebhookService(store, allow_private=True).create(
        tenant, url=url, event_types=["*"], enabled=True
    )
    dispatcher = WebhookDispatcher(store, lambda job: {"job_id": job.id}, settings)
    try:
        await EventLogService(store).emit(tenant, "order.created", {})
        await dispatcher.sweep()
        await dispatcher.idle()
    finally:
        await dispatcher.stop()
    return webhook.id
