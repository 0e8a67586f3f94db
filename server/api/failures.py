"""Throttles failed credential checks per client address.

A caller guessing keys or tokens fails every check, and each unknown API key costs a
database read. Every failure takes a token from its address's bucket (`burst` of them,
AGENTQ_AUTH_FAILURE_BURST, refilled at FAILURE_RATE per second); while the bucket is
empty, the address's credentials are not checked at all and the call is refused as rate
limited. Buckets live in each server
process: an address spread over N replicas gets N buckets, which still bounds its rate.

The client address is the gRPC peer's, unless the peer is a trusted proxy (the REST shim
on the same host, by default) that names the client in `x-agentq-client-address`.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from server import metrics
from server.errors import ResourceExhausted

FAILURE_RATE = 0.5
# Addresses remembered at most; the least recently failing one makes room.
MAX_ADDRESSES = 10_000
CLIENT_ADDRESS = "x-agentq-client-address"
TOO_MANY_FAILURES = "Too many failed credential checks"


def peer_address(peer: str) -> str:
    """The IP of a gRPC peer string (`ipv4:1.2.3.4:5`, `ipv6:[::1]:5`), else the string."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return peer


def client_address(peer: str, metadata: Mapping[str, Any], trusted: Collection[str]) -> str:
    """Who is calling: the peer, or the client a trusted proxy names."""
    address = peer_address(peer)
    named = metadata.get(CLIENT_ADDRESS)
    if address in trusted and isinstance(named, str) and _is_ip(named):
        return named
    return address


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class FailureThrottle:
    """A bucket of allowed failures per client address, in this process."""

    def __init__(self, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def _tokens(self, address: str) -> float:
        now = self._clock()
        tokens, since = self._buckets.get(address, (float(self._burst), now))
        return min(float(self._burst), tokens + (now - since) * FAILURE_RATE)

    def check(self, address: str) -> None:
        """Refuse the call when the address has no failures left."""
        if address not in self._buckets:
            return
        tokens = self._tokens(address)
        if tokens < 1:
            metrics.refused("auth_throttle")
            raise ResourceExhausted(
                TOO_MANY_FAILURES,
                retry_after_s=math.ceil((1 - tokens) / FAILURE_RATE),
                subject=f"address:{address}",
                limit=f"{self._burst} failed credential checks, "
                f"refilled at {FAILURE_RATE:g} per second",
            )

    def failed(self, address: str) -> None:
        """Count one failed check of the address."""
        tokens = max(0.0, self._tokens(address) - 1)
        self._buckets.pop(address, None)
        if len(self._buckets) >= MAX_ADDRESSES:
            self._buckets.pop(next(iter(self._buckets)))
        self._buckets[address] = (tokens, self._clock())
