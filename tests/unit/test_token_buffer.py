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
from server.worker.store import ThreadStore
from server.worker.tokens import TokenBuffer
from tests.unit.fakes import (
    FakeClock,
    FakeQueue,
    FakeStore,
    ScriptedProvider,
    Stream,
    make_agent,
    make_job,
    run_job,
)


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


def test_pieces_within_one_interval_are_one_event_after_the_first_and_the_rest_at_the_end() -> None:
    async def stream() -> list[str]:
        events = Events()
        buffer = TokenBuffer(events.write, interval_s=60)
        buffer.add("Revenue ")
        await _turns()
        for piece in ("grew ", "12% ", "on ", "strong ", "exports."):
            buffer.add(piece)
            await _turns()
        assert events.written == ["Revenue "]  # the rest waits for the interval
        await buffer.finish()
        return events.written

    assert asyncio.run(stream()) == ["Revenue ", "grew 12% on strong exports."]


def test_pieces_are_written_again_once_the_interval_is_over() -> None:
    async def stream() -> list[str]:
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
        return written

    assert asyncio.run(stream()) == ["Revenue ", "grew 12%."]


def test_with_no_interval_each_piece_is_an_event_of_its_own() -> None:
    pieces = ["Revenue ", "grew ", "12% ", "on strong exports."]

    async def stream() -> list[str]:
        events = Events()
        buffer = TokenBuffer(events.write, interval_s=0)
        for piece in pieces:
            buffer.add(piece)
            await _turns()
        await buffer.finish()
        return events.written

    assert asyncio.run(stream()) == pieces


def test_pieces_keep_their_order_and_writes_never_overlap_when_the_store_is_slow() -> None:
    pieces = [f"{n} " for n in range(200)]

    async def stream() -> Events:
        events = Events(delay_s=0.002)
        buffer = TokenBuffer(events.write, interval_s=0)
        for piece in pieces:
            buffer.add(piece)
            buffer.add("")  # an empty piece is no event
            await asyncio.sleep(0.0005)
        await buffer.finish()
        return events

    events = asyncio.run(stream())
    assert "".join(events.written) == "".join(pieces)
    assert "" not in events.written
    assert 1 < len(events.written) < len(pieces)  # slow writes coalesce what came meanwhile
    assert events.most_in_flight == 1


def test_discard_drops_the_pieces_not_yet_written_but_waits_for_the_write_under_way() -> None:
    async def stream() -> tuple[list[str], list[str], bool]:
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
        return events.started, events.written, waited

    started, written, waited = asyncio.run(stream())
    assert waited  # the attempt records its outcome only after the write under way
    assert started == written == ["Revenue "]


def test_discard_before_any_write_writes_nothing() -> None:
    async def stream() -> list[str]:
        events = Events()
        buffer = TokenBuffer(events.write, interval_s=0)
        buffer.add("Revenue ")
        await buffer.discard()
        await _turns()
        return events.started

    assert asyncio.run(stream()) == []


def test_a_write_that_fails_is_logged_and_the_later_pieces_are_still_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    written: list[str] = []

    async def flaky(text: str) -> None:
        if not written and text == "Revenue ":
            written.append("(lost)")
            raise ConnectionError("database went away")
        written.append(text)

    async def stream() -> None:
        buffer = TokenBuffer(flaky, interval_s=0)
        buffer.add("Revenue ")
        await _turns()
        buffer.add("grew 12%.")
        await buffer.finish()

    with caplog.at_level(logging.WARNING, logger="server.worker.tokens"):
        asyncio.run(stream())

    assert written == ["(lost)", "grew 12%."]
    assert [r.getMessage() for r in caplog.records] == ["could not record a token event"]


class TokenlessStore(ThreadStore):
    """A store whose token events all fail, as a database refusing that one write would."""

    async def apply(self, change: Transition) -> bool:
        if change.event is not None and change.event.type == EventType.TOKEN:
            raise ConnectionError("could not write the event")
        return await super().apply(change)


def test_token_events_that_cannot_be_written_do_not_keep_the_job_from_completing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, clock = FakeStore(), FakeClock()
    agent = make_agent()
    job = make_job(agent, at=clock.now)
    store.put(agent, job)
    provider = ScriptedProvider(Stream(("Revenue ", "grew ", "12%."), tokens_used=9))
    runner = AttemptRunner(
        TokenlessStore(store.unit_of_work, threads=1),
        provider,
        FakeQueue(),
        RetryPolicy(),
        clock=clock,
        token_interval_s=0,
    )

    with caplog.at_level(logging.WARNING, logger="server.worker.tokens"):
        run_job(runner, job.id)

    row = store.jobs[job.id]
    assert (row.status, row.response, row.tokens_used) == (
        JobStatus.COMPLETED,
        "Revenue grew 12%.",
        9,
    )
    assert [e.type for e in store.events_of(job.id)] == ["started", "completed"]
    assert caplog.records  # each lost event is logged
