"""What every execution provider offers: one completion call, and its result and error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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


def timed_out(timeout_s: float) -> ProviderError:
    """The error every provider raises when a call runs out of time."""
    return ProviderError(f"Provider timed out after {timeout_s:g}s", retryable=True)


class Provider(Protocol):
    """A model an agent runs on."""

    def complete(self, *, system: str, prompt: str, timeout_s: float) -> Completion:
        """Answer `prompt` in the role `system`, giving up after `timeout_s` seconds."""
        ...
