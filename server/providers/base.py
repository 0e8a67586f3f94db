"""What every execution provider offers: one async completion call, and its result and error."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

# Receives each piece of the answer as a streaming provider produces it. It must not
# block: the engine only buffers the piece and writes it later, coalesced.
DeltaSink = Callable[[str], None]


@dataclass(frozen=True)
class Message:
    """An earlier turn of the conversation, sent between the system message and the prompt."""

    role: Literal["user", "assistant"]
    content: str


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
    """The error a provider raises when its own request timeout runs out."""
    return ProviderError(f"Provider timed out after {timeout_s:g}s", retryable=True)


class Provider(Protocol):
    """A model an agent runs on, called on the worker's event loop.

    The engine bounds each call by the job's time limit and stops it when the job is
    cancelled, both by cancelling the coroutine: a provider lets CancelledError pass
    and releases its connection on the way out, so an abandoned call holds nothing.
    """

    async def complete(
        self,
        *,
        system: str,
        prompt: str,
        history: Sequence[Message] = (),
        on_delta: DeltaSink | None = None,
    ) -> Completion:
        """Answer `prompt` in the role `system` after `history` (oldest first).

        `on_delta` receives each streamed piece of the answer.
        """
        ...

    async def aclose(self) -> None:
        """Release the provider's connections; called once, on the loop, at shutdown."""
        ...
