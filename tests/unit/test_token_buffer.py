"""A streamed answer's pieces become few token events, written in order, never in the way."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.store.events import EventType
from server.store.models import JobStatus
from server.store.transitions import Transition
from server.worker.policy import RetryPolicy
from server.worker.runner import AttemptRunner
from server.worker.store import DatabaseAttemptStore
from server.worker.tokens import TokenBuffer
from tests.fakes.provider import ScriptedProvider, Stream
from tests.world import World


class Events:
    """Token events as the store receives them; `gate`, when set, holds each write."""

    def __init__(self, *, gate: asyncio.Event | None = None, delay_s: float = 0.0) -> None:
        self.written: list[str] = []
        self.started: list[str] = []
        self.gate = gate
        self.delay_s = delay_s
        self.in_flight = 0
        self.most_in_flight = 0

    async def write(self, text: str) -> None:
        self.started.append(text)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            self.written.append(text)
        finally:
            self.in_flight -= 1


async def _turns(n: int = 5) -> None:
    """Let the buffer's writer take a few turns of the loop."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_pieces_in_one_interval_are_one_event_after_the_first_the_rest_at_the_end() -> None:
    events = Events()
    buffer = TokenBuffer(events.write, interval_s=60)
    buffer.add("Revenue ")
    await _turns()
    for piece in ("grew ", "12% ", "on ", "strong ", "exports."):
        buffer.add(piece)
        await _turns()
    assert events.written == ["Revenue "]  # the rest waits for the interval

    await buffer.finish()

    assert events.written == ["Revenue ", "grew 12% on strong exports."]


async def test_pieces_are_written_again_once_the_interval_is_over() -> None:
    events = Events()
    buffer = TokenBuffer(events.write, interval_s=0.05)
    buffer.add("Revenue ")
    await _turns()
    buffer.add("grew ")
    buffer.add("12%.")
    await asyncio.sleep(0.3)
    written = list(events.written)

    await buffer.finish()

    assert events.written == written  # nothing was left for the end
    assert written == ["Revenue ", "grew 12%."]


async def test_with_no_interval_each_piece_is_an_event_of_its_own() -> None:
    pieces = ["Revenue ", "grew ", "12% ", "on strong exports."]
    events = Events()
    buffer = TokenBuffer(events.write, interval_s=0)

    for piece in pieces:
        buffer.add(piece)
        await _turns()
    await buffer.finish()

    assert events.written == pieces


async def test_pieces_keep_their_order_and_writes_never_overlap_when_the_store_is_slow() -> None:
    pieces = [f"{n} " for n in range(200)]
    events = Events(delay_s=0.002)
    buffer = TokenBuffer(events.write, interval_s=0)

    for piece in pieces:
        buffer.add(piece)
        buffer.add("")  # an empty piece is no event
        await asyncio.sleep(0.0005)
    await buffer.finish()

    assert "".join(events.written) == "".join(pieces)
    assert "" not in events.written
    assert 1 < len(events.written) < len(pieces)  # slow writes coalesce what came meanwhile
    assert events.most_in_flight == 1


async def test_discard_drops_the_pieces_not_yet_written_but_waits_for_the_write_under_way() -> None:
    gate = asyncio.Event()
    events = Events(gate=gate)
    buffer = TokenBuffer(events.write, interval_s=0)
    buffer.add("Revenue ")
    await _turns()  # its write is under way, held at the gate
    buffer.add("grew ")

    discarding = asyncio.get_running_loop().create_task(buffer.discard())
    await _turns()
    waited = not discarding.done()
    gate.set()
    await discarding

    assert waited  # the attempt records its outcome only after the write under way
    assert events.started == events.written == ["Revenue "]


async def test_discard_before_any_write_writes_nothing() -> None:
    events = Events()
    buffer = TokenBuffer(events.write, interval_s=0)
    buffer.add("Revenue ")

    await buffer.discard()
    await _turns()

    assert events.started == []


async def test_a_write_that_fails_is_logged_and_the_later_pieces_are_still_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    written: list[str] = []

    async def flaky(text: str) -> None:
        if not written and text == "Revenue ":
            written.append("(lost)")
            raise ConnectionError("database went away")
        written.append(text)

    with caplog.at_level(logging.WARNING, logger="server.worker.tokens"):
        buffer = TokenBuffer(flaky, interval_s=0)
        buffer.add("Revenue ")
        await _turns()
        buffer.add("grew 12%.")
        await buffer.finish()

    assert written == ["(lost)", "grew 12%."]
    assert [r.getMessage() for r in caplog.records] == ["could not record a token event"]


class TokenlessStore(DatabaseAttemptStore):
    """A store whose token events all fail, as a database refusing that one write would."""

    async def apply(self, change: Transition) -> bool:
        if change.event is not None and change.event.type == EventType.TOKEN:
            raise ConnectionError("could not write the event")
        return await super().apply(change)


async def test_token_events_that_cannot_be_written_do_not_keep_the_job_from_completing(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    job = await world.add_job(await world.add_agent())
    provider = ScriptedProvider(Stream(("Revenue ", "grew ", "12%."), tokens_used=9))
    runner = AttemptRunner(
        TokenlessStore(world.store),
        provider,
        world.queue,
        RetryPolicy(),
        clock=world.clock,
        token_interval_s=0,
    )

    with caplog.at_level(logging.WARNING, logger="server.worker.tokens"):
        await world.run_job(runner, job.id)

    row = await world.job(job.id)
    assert row is not None
    assert (row.status, row.response, row.tokens_used) == (
        JobStatus.COMPLETED,
        "Revenue grew 12%.",
        9,
    )
    assert [e.type for e in await world.events(job.id)] == ["queued", "started", "completed"]
    assert caplog.records  # each lost event is logged
