"""gRPC requests as raw bytes: framed for h2load, and checked with a real client."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

Metadata = tuple[tuple[str, str], ...]
if TYPE_CHECKING:
    # A unary method sending and receiving raw bytes (no serializers); the grpc
    # classes are generic in their type stubs only.
    RawMethod = grpc.UnaryUnaryMultiCallable[bytes, bytes]


def frame(message: bytes) -> bytes:
    """One uncompressed gRPC length-prefixed message: flag byte, 4-byte length, payload."""
    return b"\0" + struct.pack(">I", len(message)) + message


@dataclass(frozen=True)
class GrpcCall:
    """One unary call: where it goes, its serialized request, and its metadata."""

    port: int
    path: str
    request: bytes
    metadata: Metadata = ()

    @property
    def url(self) -> str:
        """The h2c URL h2load posts to."""
        return f"http://127.0.0.1:{self.port}{self.path}"

    def headers(self) -> list[str]:
        """The HTTP/2 request headers of a gRPC call, as `name: value` strings."""
        extra = [f"{name}: {value}" for name, value in self.metadata]
        return ["content-type: application/grpc", "te: trailers", *extra]

    def invoke(self, *, timeout_s: float = 10.0) -> bytes:
        """Make the call once with a real gRPC client; raise grpc.RpcError unless it is OK."""
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            method: RawMethod = channel.unary_unary(self.path)
            reply: bytes = method(self.request, metadata=self.metadata, timeout=timeout_s)
            return reply

    def response_frame_size(self) -> int:
        """Bytes of DATA one successful answer carries (a failed call carries none)."""
        return len(frame(self.invoke()))


def probe_statuses(call: GrpcCall, count: int) -> dict[str, int]:
    """Send `count` calls at once with a real client; how many ended with each status."""
    seen: dict[str, int] = {}
    with grpc.insecure_channel(f"127.0.0.1:{call.port}") as channel:
        method: RawMethod = channel.unary_unary(call.path)
        futures = [
            method.future(call.request, metadata=call.metadata, timeout=10) for _ in range(count)
        ]
        for future in futures:
            code = future.code().name
            seen[code] = seen.get(code, 0) + 1
    return seen


def bearer(token: str) -> Metadata:
    """The authorization metadata of a bearer token."""
    return (("authorization", f"Bearer {token}"),)


def check_ok(calls: Sequence[GrpcCall]) -> None:
    """Call each once; an error status raises with its code and message."""
    for call in calls:
        try:
            call.invoke()
        except grpc.RpcError as error:
            raise RuntimeError(
                f"{call.path} answered {error.code().name}: {error.details()}"
            ) from error
