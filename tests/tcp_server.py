"""A bare TCP server for the tests that need a peer misbehaving below HTTP: each
connection goes to a handler on a thread of its own."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# The handler gets the connection and an event set when the server stops.
Handler = Callable[[socket.socket, threading.Event], None]


@contextmanager
def tcp_server(handle: Handler) -> Iterator[int]:
    """A TCP server on 127.0.0.1 running `handle` for each connection; yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    # accept() wakes up this often to see whether the server stops.
    listener.settimeout(0.1)
    stopping = threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(None)
            threading.Thread(target=handle, args=(connection, stopping), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stopping.set()
        thread.join(timeout=5)
        listener.close()
