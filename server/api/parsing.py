"""Request bytes to messages, for the guard: a bad unary request reaches the guard as a value.

grpc parses a unary request before any handler runs and answers UNKNOWN with the parser's
text when it raises; parsed here, the guard admits the call first and then answers a
clear INVALID_ARGUMENT (`server/api/guard.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import message

from server.errors import InvalidArgument


class Unparsable:
    """Stands in for a unary request whose bytes are not a message of its type."""


UNPARSABLE = Unparsable()


def tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """Parse a unary request; grpc answers UNKNOWN with the exception text if parsing raises."""

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except message.DecodeError:
            return UNPARSABLE

    return parse


def strict(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """Parse each message of a request stream, raising while the guarded handler iterates."""

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except message.DecodeError:
            raise InvalidArgument.unparsable() from None

    return parse
