"""The builtin provider: deterministic echo answers, latency, timeouts, token counts."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from server.providers.base import Completion, ProviderError
from server.providers.builtin import BuiltinProvider
from server.providers.factory import build_provider
from server.providers.openai_compat import OpenAICompatibleProvider
from server.settings import Settings


def test_the_same_role_and_prompt_always_give_the_same_answer() -> None:
    provider = BuiltinProvider(latency_ms=0)

    first = provider.complete(system="You are a poet.", prompt="Write a haiku", timeout_s=1)
    second = provider.complete(system="You are a poet.", prompt="Write a haiku", timeout_s=1)

    assert first == second
    assert first.text == 'As "You are a poet.": Write a haiku'


def test_a_different_prompt_gives_a_different_answer() -> None:
    provider = BuiltinProvider(latency_ms=0)

    haiku = provider.complete(system="You are a poet.", prompt="Write a haiku", timeout_s=1)
    sonnet = provider.complete(system="You are a poet.", prompt="Write a sonnet", timeout_s=1)

    assert haiku.text != sonnet.text


def test_long_roles_and_prompts_are_cut_to_their_first_words() -> None:
    provider = BuiltinProvider(latency_ms=0)
    role = "one two three four five six seven eight"
    prompt = " ".join(f"w{i}" for i in range(30))

    answer = provider.complete(system=role, prompt=prompt, timeout_s=1)

    expected_prompt = " ".join(f"w{i}" for i in range(20))
    assert answer.text == f'As "one two three four five six ...": {expected_prompt} ...'


def test_a_blank_role_is_answered_as_an_assistant() -> None:
    answer = BuiltinProvider(latency_ms=0).complete(system="  ", prompt="Hi", timeout_s=1)

    assert answer.text == 'As "assistant": Hi'


def test_tokens_used_counts_the_words_of_role_prompt_and_answer() -> None:
    answer = BuiltinProvider(latency_ms=0).complete(
        system="You are a poet.", prompt="Write a haiku", timeout_s=1
    )

    # 4 role words + 3 prompt words + 8 answer words: As "You are a poet.": Write a haiku
    assert answer.tokens_used == 4 + 3 + 8


def test_the_answer_waits_for_the_configured_latency() -> None:
    provider = BuiltinProvider(latency_ms=150)

    started = time.monotonic()
    answer = provider.complete(system="r", prompt="p", timeout_s=5)
    elapsed = time.monotonic() - started

    assert isinstance(answer, Completion)
    assert 0.15 <= elapsed < 1.0


def test_a_latency_longer_than_the_time_left_times_out_when_the_time_is_up() -> None:
    provider = BuiltinProvider(latency_ms=5000)

    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        provider.complete(system="r", prompt="p", timeout_s=0.1)
    elapsed = time.monotonic() - started

    assert caught.value.message == "Provider timed out after 0.1s"
    assert caught.value.retryable is True
    assert caught.value.tokens_used == 0
    assert 0.1 <= elapsed < 1.0


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
    )

    provider = build_provider(settings)

    assert isinstance(provider, OpenAICompatibleProvider)
    try:
        assert provider.url == "http://models.example/v1/chat/completions"
        assert provider.model == "tiny-model"
        assert provider.timeout_s == 3
    finally:
        provider.close()
