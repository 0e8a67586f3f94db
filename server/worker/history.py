"""The chat history an attempt sends its provider: the earlier turns of the job's context.

An attempt sees the turns of its tenant's context whose jobs completed by its claim,
oldest first: a turn completing while it runs is left to the executions claimed after
it, so two executions on one context at once each see what was there when they started,
and neither sees the other. The window keeps the newest turns that fit both bounds, whole
turns only: at most `max_turns`, and at most `max_chars` characters of prompts and
answers together. The oldest go first; a turn that does not fit ends the window, so no
older turn is sent without the ones after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.providers.base import Message
from server.store.records import TurnRecord
from server.store.transitions import Attempt
from server.worker.store import AttemptStore


@dataclass(frozen=True)
class ContextLimits:
    """How much of a context an attempt sends (AGENTQ_CONTEXT_MAX_TURNS and _MAX_CHARS)."""

    max_turns: int = 20
    max_chars: int = 32_000


async def load_history(
    store: AttemptStore, attempt: Attempt, limits: ContextLimits
) -> tuple[Message, ...]:
    """The messages of the attempt's context window; none for a job without a context."""
    if attempt.context_id is None or limits.max_turns <= 0:
        return ()
    newest_first = await store.history(attempt.job_id, limit=limits.max_turns)
    return window(newest_first, max_chars=limits.max_chars)


def window(newest_first: Sequence[TurnRecord], *, max_chars: int) -> tuple[Message, ...]:
    """The newest turns within `max_chars`, oldest first, each as a user and an assistant
    message."""
    kept: list[TurnRecord] = []
    used = 0
    for turn in newest_first:
        used += len(turn.prompt) + len(turn.response)
        if used > max_chars:
            break
        kept.append(turn)
    return tuple(
        message
        for turn in reversed(kept)
        for message in (Message("user", turn.prompt), Message("assistant", turn.response))
    )
