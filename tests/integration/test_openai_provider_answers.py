"""The OpenAI-compatible provider's requests, and the answers it reads, streamed or not,
against a real local chat-completions server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from server.providers.base import Completion
from server.providers.openai_compat import OpenAICompatibleProvider
from tests.integration.openai_servers import (
    API_KEY,
    MODEL,
    OK_BODY,
    PROMPT,
    ROLE_CHUNK,
    SSE,
    SYSTEM,
    ScriptedServer,
    complete,
    delta,
    make_provider,
    sse,
)


def test_a_call_asks_for_a_stream_with_usage_and_sends_both_messages_and_the_key(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    complete(provider)

    [request] = scripted.received
    assert request.path == "/v1/chat/completions"
    assert request.body == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": PROMPT},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"


def test_no_authorization_header_is_sent_without_an_api_key(scripted: ScriptedServer) -> None:
    complete(make_provider(scripted.base_url, api_key=None))

    [request] = scripted.received
    assert "authorization" not in request.headers


def test_a_trailing_slash_on_the_base_url_is_ignored(scripted: ScriptedServer) -> None:
    complete(make_provider(scripted.base_url + "/"))

    assert [r.path for r in scripted.received] == ["/v1/chat/completions"]


def test_streamed_pieces_reach_on_delta_and_join_into_the_answer(
    provider: OpenAICompatibleProvider,
) -> None:
    deltas: list[str] = []

    completion = complete(provider, deltas=deltas)

    # The role-only first chunk carries no text and is not passed on.
    assert deltas == ["Bon", "jour"]
    assert completion == Completion(text="Bonjour", tokens_used=23)


def test_comments_other_fields_and_data_without_a_space_are_read_as_sse(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    text = (
        ": keep-alive\n\nevent: message\nid: 1\n"
        + f"data:{json.dumps(delta('Bon'))}\n\n"
        + sse(delta(None), delta(""), delta("jour"), {"choices": [], "usage": {"total_tokens": 9}})
    )
    scripted.answer_raw(200, text, content_type=SSE)
    deltas: list[str] = []

    completion = complete(provider, deltas=deltas)

    assert deltas == ["Bon", "jour"]
    assert completion == Completion(text="Bonjour", tokens_used=9)


def test_half_a_surrogate_pair_in_a_chunk_is_still_read(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    # A model may cut an emoji in two; the JSON escape of its first half is valid JSON.
    half = '{"choices": [{"index": 0, "delta": {"content": "ok \\ud83d"}}]}'
    scripted.answer_raw(200, f"data: {half}\n\ndata: [DONE]\n\n", content_type=SSE)

    assert complete(provider).text == "ok \ud83d"


def test_a_stream_without_usage_counts_zero_tokens(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    scripted.answer_raw(200, sse(ROLE_CHUNK, delta("Bon"), delta("jour")), content_type=SSE)

    assert complete(provider) == Completion(text="Bonjour", tokens_used=0)


def test_a_server_that_ignores_stream_is_read_as_one_json_answer(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    scripted.answer(200, OK_BODY)
    deltas: list[str] = []

    completion = complete(provider, deltas=deltas)

    assert completion == Completion(text="Bonjour", tokens_used=23)
    assert deltas == []


@pytest.mark.parametrize(
    ("usage", "tokens"),
    [
        ({"prompt_tokens": 21, "completion_tokens": 2}, 23),
        ({}, 0),
        (None, 0),
    ],
    ids=["prompt-plus-completion", "empty-usage", "no-usage"],
)
def test_tokens_fall_back_to_prompt_plus_completion_then_zero(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider, usage: Any, tokens: int
) -> None:
    body = {key: value for key, value in OK_BODY.items() if key != "usage"}
    if usage is not None:
        body["usage"] = usage
    scripted.answer(200, body)

    assert complete(provider).tokens_used == tokens


def test_consecutive_calls_reuse_one_connection(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    async def twice() -> None:
        try:
            await provider.complete(system=SYSTEM, prompt=PROMPT)
            await provider.complete(system=SYSTEM, prompt=PROMPT)
        finally:
            await provider.aclose()

    asyncio.run(twice())

    first, second = scripted.received
    assert first.client_port == second.client_port
