"""What the sync and asyncio clients share: retries, deadlines, credentials and the target."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from agentq.client.errors import AgentQError, Cancelled, InternalError, RateLimited, Unavailable

DEFAULT_URL = "127.0.0.1:50051"
# The channel tries a lost server again soon: a restarted server is found within a second
# or so, not after grpcio's default backoff of up to two minutes.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def env_options(options: dict[str, Any]) -> dict[str, Any]:
    """A client's options with AGENTQ_URL, and AGENTQ_API_KEY or AGENTQ_TOKEN, where
    `options` name no url and no credentials."""
    chosen = dict(options)
    chosen.setdefault("url", os.environ.get("AGENTQ_URL") or DEFAULT_URL)
    if "api_key" not in chosen and "token" not in chosen:
        chosen["api_key"] = os.environ.get("AGENTQ_API_KEY") or None
        chosen["token"] = None if chosen["api_key"] else os.environ.get("AGENTQ_TOKEN")
    return chosen


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of UNAVAILABLE and RESOURCE_EXHAUSTED with exponential backoff and jitter.

    A RetryInfo delay from the server is waited in full. A watched job's stream is
    resumed after a drop for up to `stream_reconnect_s` without an event.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    multiplier: float = 2.0
    stream_reconnect_s: float = 60.0

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (from 1), jittered by ±20 %."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        return base * random.uniform(0.8, 1.2)

    def delay(self, error: AgentQError, attempt: int, *, idempotent: bool) -> float | None:
        """Seconds to wait before trying again, or None when the error should be raised.

        A call that is not idempotent is tried again only when the server itself refused
        it (its status names a reason), so it cannot have taken effect.
        """
        if attempt >= self.max_attempts or not retryable(error):
            return None
        if not idempotent and not error.reason:
            return None
        return max(self.backoff(attempt), error.retry_after or 0.0)


NO_RETRIES = RetryPolicy(max_attempts=1, stream_reconnect_s=0.0)


def retryable(error: AgentQError) -> bool:
    """UNAVAILABLE, and RESOURCE_EXHAUSTED when the server says when to come back.

    RESOURCE_EXHAUSTED without RetryInfo is grpcio's own refusal of oversized metadata,
    which the same call meets again.
    """
    if isinstance(error, RateLimited):
        return error.retry_after is not None
    return isinstance(error, Unavailable)


def resumable(error: AgentQError) -> bool:
    """Whether a dropped event stream is worth opening again after the last event seen.

    A server that stops ends its streams as UNAVAILABLE, CANCELLED or an INTERNAL
    transport error (a reset stream); none of those carries agentq's ErrorInfo.
    """
    if retryable(error):
        return True
    return isinstance(error, Cancelled | InternalError) and not error.reason


class Deadline:
    """The end of a logical call, across its retries; None for no deadline."""

    def __init__(self, timeout: float | None, *, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._end = None if timeout is None else clock() + timeout

    def remaining(self) -> float | None:
        """Seconds left (at least 0), or None without a deadline."""
        return None if self._end is None else max(0.0, self._end - self._clock())

    def allows(self, wait_s: float) -> bool:
        """True if waiting `wait_s` still leaves time for another attempt."""
        left = self.remaining()
        return left is None or wait_s < left


def split_url(url: str) -> tuple[str, bool]:
    """The gRPC target of a URL and whether it uses TLS.

    `host:port`, `grpc://` and `http://` are plaintext; `grpcs://` and `https://` use TLS.
    """
    for prefix, secure in (("grpcs://", True), ("https://", True), ("grpc://", False)):
        if url.startswith(prefix):
            return url.removeprefix(prefix).rstrip("/"), secure
    return url.removeprefix("http://").rstrip("/"), False


def channel_credentials(secure: bool) -> grpc.ChannelCredentials | None:
    """TLS credentials with the system's roots, or None for plaintext."""
    return grpc.ssl_channel_credentials() if secure else None


@dataclass
class ExchangedToken:
    """A JWT the server exchanged for an API key, and when to exchange again.

    It is renewed once 80 % of its lifetime has passed, so a call never starts with a
    token about to expire.
    """

    access_token: str
    renew_at: float

    @classmethod
    def issued(
        cls, access_token: str, expires_in: int, *, clock: Callable[[], float] = time.monotonic
    ) -> ExchangedToken:
        """A token valid for `expires_in` seconds from now."""
        return cls(access_token, clock() + 0.8 * max(expires_in, 0))


class Credentials:
    """A caller's credentials: a JWT as is, or an API key exchanged for JWTs."""

    def __init__(
        self,
        *,
        token: str | None = None,
        api_key: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if token and api_key:
            raise ValueError("give a token or an API key, not both")
        self.token = token
        self.api_key = api_key
        self.exchanged: ExchangedToken | None = None
        self._clock = clock

    @property
    def exchanges(self) -> bool:
        """True when calls carry JWTs exchanged for the API key."""
        return bool(self.api_key)

    def needs_exchange(self) -> bool:
        """True when there is no exchanged token yet, or it is due for renewal."""
        if not self.exchanges:
            return False
        return self.exchanged is None or self._clock() >= self.exchanged.renew_at

    def accept(self, access_token: str, expires_in: int) -> None:
        """Keep a token the server exchanged for the key."""
        self.exchanged = ExchangedToken.issued(access_token, expires_in, clock=self._clock)

    def forget(self) -> None:
        """Drop the exchanged token, e.g. after the server refused it."""
        self.exchanged = None

    def key_metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata of the exchange call itself."""
        return (("x-api-key", self.api_key or ""),)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata of an ordinary call."""
        bearer = self.exchanged.access_token if self.exchanged else self.token
        return (("authorization", f"Bearer {bearer}"),) if bearer else ()
