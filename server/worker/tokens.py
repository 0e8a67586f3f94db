"""Coalesces a streamed answer's pieces into few token events.

A provider may stream an answer in thousands of pieces; a database write per piece would
cost more than the call. Pieces are buffered and written as one event at most once per
interval, plus one at the end, so a 2,000-piece answer costs a handful of writes. Writes
never overlap: pieces that arrive while one is under way go in the next, so even with an
interval of 0 an event may carry several pieces when the database is slower than the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class TokenBuffer:
    """Buffers pieces of one attempt's answer; writes them with `write`, in order."""

    def __init__(self, write: Callable[[str], Awaitable[object]], *, interval_s: float) -> None:
        self._write = write
        self._interval_s = interval_s
        self._pieces: list[str] = []
        self._flusher: asyncio.Task[None] | None = None
        # Loop time before which no further event is written; 0: write the first at once.
        self._next_at = 0.0
        self._hurry = asyncio.Event()

    def add(self, piece: str) -> None:
        """Take one piece (a provider's on_delta); never blocks."""
        if not piece:
            return
        self._pieces.append(piece)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_when_due())

    async def finish(self) -> None:
        """Write every piece not yet written, now: the last token event."""
        self._hurry.set()
        if self._flusher is not None:
            await self._flusher
        if self._pieces:
            await self._write_pending()

    async def discard(self) -> None:
        """Drop the pieces not yet written, after any write under way has ended."""
        self._pieces.clear()
        await self.finish()

    async def _flush_when_due(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pieces:
                delay = self._next_at - loop.time()
                if delay > 0 and not self._hurry.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._hurry.wait(), delay)
                if self._pieces:
                    await self._write_pending()
        finally:
            self._flusher = None

    async def _write_pending(self) -> None:
        text = "".join(self._pieces)
        self._pieces.clear()
        self._next_at = asyncio.get_running_loop().time() + self._interval_s
        try:
            await self._write(text)
        except Exception:
            # A lost token event costs only the live view: the answer is stored whole.
            log.warning("could not record a token event", exc_info=True)
