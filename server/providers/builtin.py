"""A deterministic, offline provider for development and tests."""

from __future__ import annotations

import threading

from server.providers.base import Cancelled, Completion, DeltaSink, timed_out

# How many leading words of the role and of the prompt the echo repeats.
_ROLE_WORDS = 6
_PROMPT_WORDS = 20
# With a latency, the answer streams in this many pieces spread over it.
_PIECES = 4


def _head(text: str, max_words: int) -> str:
    """The first `max_words` words of `text`, with "..." if some were cut."""
    words = text.split()
    head = " ".join(words[:max_words])
    return f"{head} ..." if len(words) > max_words else head


class BuiltinProvider:
    """Answers with an echo of the role and the prompt, streamed over a fixed latency.

    The answer is `As "<role>": <prompt>`, where <role> is the first 6 words of `system`
    (or "assistant" if it is blank) and <prompt> the first 20 words of `prompt`, each
    followed by " ..." when cut. The same (system, prompt) always gives the same answer.
    `tokens_used` counts the whitespace-separated words of system, prompt and answer.
    With a latency the answer arrives in up to four pieces spread over it (token
    deltas), and a cancel stops it between pieces; with none it answers at once.
    """

    def __init__(self, *, latency_ms: int) -> None:
        self.latency_ms = latency_ms

    def complete(
        self,
        *,
        system: str,
        prompt: str,
        timeout_s: float,
        cancel: threading.Event | None = None,
        on_delta: DeltaSink | None = None,
    ) -> Completion:
        """Stream the echo over `latency_ms`; time out if that is longer than `timeout_s`."""
        role = _head(system, _ROLE_WORDS) or "assistant"
        text = f'As "{role}": {_head(prompt, _PROMPT_WORDS)}'.rstrip()
        tokens = len(system.split()) + len(prompt.split()) + len(text.split())
        latency_s = self.latency_ms / 1000
        if latency_s > 0:
            self._stream(text, min(latency_s, max(timeout_s, 0.0)), cancel, on_delta)
        if latency_s > timeout_s:
            raise timed_out(timeout_s)
        return Completion(text=text, tokens_used=tokens)

    @staticmethod
    def _stream(
        text: str, duration_s: float, cancel: threading.Event | None, on_delta: DeltaSink | None
    ) -> None:
        # Equal waits, each followed by the next piece of the answer.
        waiter = cancel or threading.Event()
        words = text.split(" ")
        size = -(-len(words) // _PIECES)
        pieces = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
        for index, piece in enumerate(pieces):
            if waiter.wait(duration_s / len(pieces)):
                raise Cancelled
            if on_delta is not None:
                on_delta(piece if index == 0 else " " + piece)
