"""What every execution provider offers: one completion call, and its result and error."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

# Receives each piece of the answer as a streaming provider produces it.
DeltaSink = Callable[[str], None]


@dataclass(frozen=True)
class Completion:
    """A model's answer and the total tokens the provider reported for it."""

    text: str
    tokens_used: int


class ProviderError(Exception):
    """A provider call failed; `retryable` says whether trying again may succeed.

    Retryable: timeouts, connection errors, HTTP 408/409/429/5xx. Not retryable: other
    4xx and malformed answers. `tokens_used` is what the failed call still cost, if known.
    """

    def __init__(self, message: str, *, retryable: bool, tokens_used: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.tokens_used = tokens_used


class Cancelled(Exception):
    """The call was abandoned because its job was cancelled."""


def timed_out(timeout_s: float) -> ProviderError:
    """The error every provider raises when a call runs out of time."""
    return ProviderError(f"Provider timed out after {timeout_s:g}s", retryable=True)


class Provider(Protocol):
    """A model an agent runs on."""

    def complete(
        self,
        *,
        system: str,
        prompt: str,
        timeout_s: float,
        cancel: threading.Event | None = None,
        on_delta: DeltaSink | None = None,
    ) -> Completion:
        """Answer `prompt` in the role `system`, giving up after `timeout_s` seconds.

        Raises Cancelled soon after `cancel` is set; calls `on_delta` with each
        piece of the answer when the provider streams.
        """
        ...
