"""A deterministic, offline provider for development and tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from server.providers.base import Completion, DeltaSink, Message
from server.providers.builtin_debate import step_answer

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


def _pieces(text: str) -> list[str]:
    """`text` cut at spaces into up to four pieces that join back into it."""
    words = text.split(" ")
    size = -(-len(words) // _PIECES)
    groups = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [group if index == 0 else " " + group for index, group in enumerate(groups)]


class BuiltinProvider:
    """Answers with an echo of the role and the prompt, streamed over a fixed latency.

    The answer is `As "<role>": <prompt>`, where <role> is the first 6 words of `system`
    (or "assistant" if it is blank) and <prompt> the first 20 words of `prompt`, each
    followed by " ..." when cut. The same (system, prompt) always gives the same answer.
    `tokens_used` counts the whitespace-separated words of system, prompt and answer.
    With a latency the answer arrives in up to four pieces spread over it (token
    deltas); with none it answers at once. It has no timeout of its own: the engine's
    time limit and a cancel both stop it between pieces, by cancelling the call. It
    reads no `history`: an echo has no memory.

    The calls of adversarial verification and of the safety judge are answered by rule
    instead (server/providers/builtin_debate.py), so that a debate can be run offline.
    """

    def __init__(self, *, latency_ms: int) -> None:
        self.latency_ms = latency_ms

    async def complete(
        self,
        *,
        system: str,
        prompt: str,
        history: Sequence[Message] = (),
        on_delta: DeltaSink | None = None,
    ) -> Completion:
        """The echo, streamed over `latency_ms` when it is above zero."""
        text = step_answer(prompt)
        if text is None:
            role = _head(system, _ROLE_WORDS) or "assistant"
            text = f'As "{role}": {_head(prompt, _PROMPT_WORDS)}'.rstrip()
        tokens = len(system.split()) + len(prompt.split()) + len(text.split())
        if self.latency_ms > 0:
            pieces = _pieces(text)
            # Equal waits, each followed by the next piece of the answer.
            wait_s = self.latency_ms / 1000 / len(pieces)
            for piece in pieces:
                await asyncio.sleep(wait_s)
                if on_delta is not None:
                    on_delta(piece)
        return Completion(text=text, tokens_used=tokens)

    async def aclose(self) -> None:
        """Nothing to release: the builtin provider holds no connections."""
