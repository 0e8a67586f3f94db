"""The builtin provider: deterministic echo answers, streamed latency, token counts."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import SecretStr

from server.providers.base import Completion, DeltaSink
from server.providers.builtin import BuiltinProvider
from server.providers.factory import build_provider
from server.providers.openai_compat import OpenAICompatibleProvider
from server.settings import Settings


def _complete(
    provider: BuiltinProvider, *, system: str, prompt: str, on_delta: DeltaSink | None = None
) -> Completion:
    return asyncio.run(provider.complete(system=system, prompt=prompt, on_delta=on_delta))


def test_the_same_role_and_prompt_always_give_the_same_answer() -> None:
    provider = BuiltinProvider(latency_ms=0)

    first = _complete(provider, system="You are a poet.", prompt="Write a haiku")
    second = _complete(provider, system="You are a poet.", prompt="Write a haiku")

    assert first == second
    assert first.text == 'As "You are a poet.": Write a haiku'


def test_a_different_prompt_gives_a_different_answer() -> None:
    provider = BuiltinProvider(latency_ms=0)

    haiku = _complete(provider, system="You are a poet.", prompt="Write a haiku")
    sonnet = _complete(provider, system="You are a poet.", prompt="Write a sonnet")

    assert haiku.text != sonnet.text


def test_long_roles_and_prompts_are_cut_to_their_first_words() -> None:
    role = "one two three four five six seven eight"
    prompt = " ".join(f"w{i}" for i in range(30))

    answer = _complete(BuiltinProvider(latency_ms=0), system=role, prompt=prompt)

    expected_prompt = " ".join(f"w{i}" for i in range(20))
    assert answer.text == f'As "one two three four five six ...": {expected_prompt} ...'


def test_a_blank_role_is_answered_as_an_assistant() -> None:
    answer = _complete(BuiltinProvider(latency_ms=0), system="  ", prompt="Hi")

    assert answer.text == 'As "assistant": Hi'


def test_tokens_used_counts_the_words_of_role_prompt_and_answer() -> None:
    answer = _complete(
        BuiltinProvider(latency_ms=0), system="You are a poet.", prompt="Write a haiku"
    )

    # 4 role words + 3 prompt words + 8 answer words: As "You are a poet.": Write a haiku
    assert answer.tokens_used == 4 + 3 + 8


def test_without_latency_the_answer_comes_at_once_in_no_pieces() -> None:
    deltas: list[str] = []

    started = time.monotonic()
    _complete(BuiltinProvider(latency_ms=0), system="r", prompt="p", on_delta=deltas.append)

    assert time.monotonic() - started < 0.1
    assert deltas == []


def test_with_latency_the_answer_streams_in_four_pieces_over_it() -> None:
    provider = BuiltinProvider(latency_ms=200)
    arrivals: list[tuple[float, str]] = []
    started = time.monotonic()

    def on_delta(piece: str) -> None:
        arrivals.append((time.monotonic() - started, piece))

    answer = _complete(
        provider, system="You are a poet.", prompt="Write a haiku", on_delta=on_delta
    )
    elapsed = time.monotonic() - started

    pieces = [piece for _, piece in arrivals]
    assert len(pieces) == 4
    assert "".join(pieces) == answer.text
    # Spread over the latency (three waits of 50 ms between first and last), not all at
    # the end.
    assert arrivals[-1][0] - arrivals[0][0] >= 0.15
    assert 0.2 <= elapsed < 1.0


def test_a_short_answer_streams_in_as_many_pieces_as_it_has_words() -> None:
    deltas: list[str] = []

    answer = _complete(
        BuiltinProvider(latency_ms=20), system="", prompt="Hi", on_delta=deltas.append
    )

    assert deltas == ["As", ' "assistant":', " Hi"]
    assert "".join(deltas) == answer.text


def test_a_cancelled_call_stops_between_pieces_at_once() -> None:
    provider = BuiltinProvider(latency_ms=5000)
    deltas: list[str] = []

    async def cancel_after_a_moment() -> float:
        call = asyncio.create_task(
            provider.complete(system="r", prompt="p", on_delta=deltas.append)
        )
        await asyncio.sleep(0.1)
        cancelled_at = time.monotonic()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        return time.monotonic() - cancelled_at

    assert asyncio.run(cancel_after_a_moment()) < 0.1
    assert deltas == []


def test_settings_choosing_builtin_build_a_builtin_provider_with_their_latency() -> None:
    provider = build_provider(Settings(provider="builtin", builtin_latency_ms=7))

    assert isinstance(provider, BuiltinProvider)
    assert provider.latency_ms == 7


def test_settings_choosing_openai_build_a_client_for_their_endpoint() -> None:
    settings = Settings(
        provider="openai",
        openai_base_url="http://models.example/v1/",
        openai_api_key=SecretStr("sk-test"),
        openai_model="tiny-model",
        openai_timeout_s=3,
        worker_concurrency=512,
    )

    provider = build_provider(settings)

    assert isinstance(provider, OpenAICompatibleProvider)
    assert provider.url == "http://models.example/v1/chat/completions"
    assert provider.model == "tiny-model"
    assert provider.timeout_s == 3
    # One connection for each execution the worker may run at once.
    assert provider.max_connections == 512
    asyncio.run(provider.aclose())
