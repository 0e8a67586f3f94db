"""A provider that plays back scripted answers and records its calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from server.providers.base import Completion, DeltaSink, Message


@dataclass(frozen=True)
class ProviderCall:
    """The arguments of one call to a provider (whether it streamed is not compared)."""

    system: str
    prompt: str
    streams: bool = field(default=False, compare=False)
    history: tuple[Message, ...] = ()


@dataclass(frozen=True)
class Stream:
    """A provider step that sends `pieces` to `on_delta` one by one, then answers with them.

    `after_piece`, when set, is called (and awaited, when async) with each piece's index
    after it was sent, e.g. to cancel the job midway.
    """

    pieces: tuple[str, ...]
    tokens_used: int
    after_piece: Callable[[int], Awaitable[None] | None] | None = None


Step = Completion | BaseException | Stream | Callable[[], Completion | Awaitable[Completion]]


class ScriptedProvider:
    """A Provider that plays back its steps in order and records every call.

    A step is a Completion to return, an exception to raise, a Stream of token deltas, or a
    callable, plain or async, whose result is returned (it may raise, sleep or change the
    world, as a real call can). Like a real call awaiting its connection, a step yields to
    the loop after each streamed piece and before it answers, so a cancel made meanwhile
    lands inside the call. `interrupted` counts the calls stopped by a cancel.
    """

    def __init__(self, *steps: Step) -> None:
        self._steps = list(steps)
        self.calls: list[ProviderCall] = []
        self.interrupted = 0
        self.closed = False

    async def complete(
        self,
        *,
        system: str,
        prompt: str,
        history: Sequence[Message] = (),
        on_delta: DeltaSink | None = None,
    ) -> Completion:
        """The next scripted answer."""
        call = ProviderCall(system, prompt, streams=on_delta is not None, history=tuple(history))
        self.calls.append(call)
        if not self._steps:
            raise AssertionError(f"provider called {len(self.calls)} times; not scripted")
        try:
            return await self._play(self._steps.pop(0), on_delta)
        except asyncio.CancelledError:
            self.interrupted += 1
            raise

    async def _play(self, step: Step, on_delta: DeltaSink | None) -> Completion:
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, Completion):
            completion = step
        elif isinstance(step, Stream):
            completion = await self._stream(step, on_delta)
        else:
            answer = step()
            completion = await answer if isinstance(answer, Awaitable) else answer
        await asyncio.sleep(0)
        return completion

    async def _stream(self, step: Stream, on_delta: DeltaSink | None) -> Completion:
        for index, piece in enumerate(step.pieces):
            if on_delta is not None:
                on_delta(piece)
            if step.after_piece is not None:
                hooked = step.after_piece(index)
                if hooked is not None:
                    await hooked
            await asyncio.sleep(0)
        return Completion(text="".join(step.pieces), tokens_used=step.tokens_used)

    async def aclose(self) -> None:
        """Note that the provider was closed."""
        self.closed = True


def slowly(seconds: float, completion: Completion) -> Callable[[], Awaitable[Completion]]:
    """A provider step that takes `seconds` of wall-clock time, then answers."""

    async def answer() -> Completion:
        await asyncio.sleep(seconds)
        return completion

    return answer
