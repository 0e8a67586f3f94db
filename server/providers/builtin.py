"""A deterministic, offline provider for development and tests."""

from __future__ import annotations

import time

from server.providers.base import Completion, timed_out

# How many leading words of the role and of the prompt the echo repeats.
_ROLE_WORDS = 6
_PROMPT_WORDS = 20


def _head(text: str, max_words: int) -> str:
    """The first `max_words` words of `text`, with "..." if some were cut."""
    words = text.split()
    head = " ".join(words[:max_words])
    return f"{head} ..." if len(words) > max_words else head


class BuiltinProvider:
    """Answers with an echo of the role and the prompt, after a fixed latency.

    The answer is `As "<role>": <prompt>`, where <role> is the first 6 words of `system`
    (or "assistant" if it is blank) and <prompt> the first 20 words of `prompt`, each
    followed by " ..." when cut. The same (system, prompt) always gives the same answer.
    `tokens_used` counts the whitespace-separated words of system, prompt and answer.
    """

    def __init__(self, *, latency_ms: int) -> None:
        self.latency_ms = latency_ms

    def complete(self, *, system: str, prompt: str, timeout_s: float) -> Completion:
        """Sleep `latency_ms`, then echo; time out if that is longer than `timeout_s`."""
        latency_s = self.latency_ms / 1000
        if latency_s > timeout_s:
            time.sleep(max(timeout_s, 0.0))
            raise timed_out(timeout_s)
        if latency_s > 0:
            time.sleep(latency_s)
        role = _head(system, _ROLE_WORDS) or "assistant"
        text = f'As "{role}": {_head(prompt, _PROMPT_WORDS)}'.rstrip()
        tokens = len(system.split()) + len(prompt.split()) + len(text.split())
        return Completion(text=text, tokens_used=tokens)
