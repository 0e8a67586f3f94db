"""Receivers that fail in the ways networks do (README, Webhooks): one that never answers,
one that trickles its answer slower than the timeout allows in all but no slower per read,
one that closes the connection, one that answers 500. Each attempt fails, is counted and
stays pending for a retry; none holds the dispatcher past the timeout."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from server.auth.principal import Principal
from server.service.webhook_dispatch import DispatchSettings
from server.store.store import Store
from tests.tcp_server import tcp_server
from tests.webhook_receiver import send_one_event

TIMEOUT_S = 1.0
# Well within TIMEOUT_S between bytes, and far past it in all.
TRICKLE_EVERY_S = 0.2
TRICKLE_FOR = 100


def _answer(connection: socket.socket, fault: str, stop: threading.Event) -> None:
    with connection:
        connection.recv(65_536)
        if fault == "silent":
            stop.wait(30)
        elif fault == "answers-500":
            connection.sendall(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n")
        elif fault == "trickles":
            connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n")
            for n in range(TRICKLE_FOR):
                if stop.wait(TRICKLE_EVERY_S):
                    return
                connection.sendall(f"x-slow-{n}: 1\r\n".encode())
            connection.sendall(b"\r\n")
        # "closes": the connection closes unanswered.


@contextmanager
def _faulty(fault: str) -> Iterator[str]:
    """A receiver on 127.0.0.1 failing as `fault` says; its URL."""
    with tcp_server(lambda connection, stop: _answer(connection, fault, stop)) as port:
        yield f"http://127.0.0.1:{port}/hook"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        # httpx's read timeout and the attempt's own run out together.
        ("silent", ("ReadTimeout: ", "TimeoutError: ")),
        ("trickles", "TimeoutError: "),
        # Which of httpx's errors depends on when the close is seen.
        ("closes", ("RemoteProtocolError: ", "ReadError: ")),
        ("answers-500", "The receiver answered 500"),
    ],
)
async def test_a_failing_receiver_leaves_the_delivery_pending_for_a_retry(
    store: Store, fault: str, error: str | tuple[str, ...]
) -> None:
    alice = Principal(subject="alice", role="user", tenant_id=f"t-{uuid.uuid4()}")
    settings = DispatchSettings(
        timeout_s=TIMEOUT_S,
        retry_s=3600,
        backoff_s=0,
        backoff_max_s=0,
        allow_private=True,
        concurrency=1000,
    )
    with _faulty(fault) as url:
        webhook_id = await send_one_event(store, alice, url, settings)
    [delivery] = await store.deliveries.page(webhook_id, after=None, limit=10)
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert delivery.last_error is not None and delivery.last_error.startswith(error), delivery
