"""The OpenAI-compatible provider against the benchmark's fake server (bench/fake_openai.py):
streaming, cancellation and many calls at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.fake_openai import FakeOpenAI
from server.providers.base import Completion
from tests.integration.openai_servers import SYSTEM, complete, make_provider


def test_the_fake_servers_stream_arrives_in_order_with_its_usage(fake: FakeOpenAI) -> None:
    deltas: list[str] = []

    completion = complete(make_provider(fake.base_url), prompt="count [chunks=50]", deltas=deltas)

    assert len(deltas) == 50
    assert "".join(deltas) == completion.text
    assert completion.text.startswith("Echo: count [chunks=50]")
    # The fake counts words: 4 of the role and 2 of the prompt, and the answer's 3.
    assert completion.tokens_used == 4 + 2 + 3


def test_a_cancelled_call_stops_at_once_and_releases_its_connection(fake: FakeOpenAI) -> None:
    provider = make_provider(fake.base_url, timeout_s=30)

    async def cancel_mid_call() -> tuple[float, float]:
        call = asyncio.create_task(provider.complete(system=SYSTEM, prompt="wait [delay=5]"))
        await asyncio.sleep(0.2)
        cancelled_at = time.monotonic()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        stopped_s = time.monotonic() - cancelled_at
        # The client stays open: only the cancel can have closed the connection.
        while fake.stats()["disconnects"] == 0 and time.monotonic() - cancelled_at < 0.5:
            await asyncio.sleep(0.01)
        released_s = time.monotonic() - cancelled_at
        await provider.aclose()
        return stopped_s, released_s

    stopped_s, released_s = asyncio.run(cancel_mid_call())

    assert stopped_s < 0.1
    assert released_s < 0.5
    stats = fake.stats()
    assert stats["disconnects"] == 1
    assert stats["in_flight"] == 0


def test_three_hundred_calls_at_once_are_all_in_flight_together(fake: FakeOpenAI) -> None:
    provider = make_provider(fake.base_url, timeout_s=30, max_connections=300)

    async def all_at_once() -> list[Completion]:
        try:
            calls = (
                provider.complete(system=SYSTEM, prompt=f"call {i} [delay=1]") for i in range(300)
            )
            return await asyncio.gather(*calls)
        finally:
            await provider.aclose()

    started = time.monotonic()
    completions = asyncio.run(all_at_once())
    elapsed = time.monotonic() - started

    assert [c.text for c in completions] == [f"Echo: call {i} [delay=1]" for i in range(300)]
    assert fake.stats()["peak_in_flight"] == 300
    assert elapsed < 3


def test_calls_beyond_max_connections_wait_for_a_free_connection(fake: FakeOpenAI) -> None:
    provider = make_provider(fake.base_url, max_connections=10)

    async def thirty() -> list[Completion]:
        try:
            calls = (provider.complete(system=SYSTEM, prompt="[delay=0.2]") for _ in range(30))
            return await asyncio.gather(*calls)
        finally:
            await provider.aclose()

    completions = asyncio.run(thirty())

    assert len(completions) == 30
    stats = fake.stats()
    assert stats["peak_in_flight"] == 10
    assert stats["completed"] == 30
