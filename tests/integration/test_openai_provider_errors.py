"""The OpenAI-compatible provider's failures: HTTP errors, malformed answers, broken
streams, timeouts and unreachable servers, each with its message and whether to retry."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

from bench.fake_openai import FakeOpenAI
from server.providers.openai_compat import OpenAICompatibleProvider
from tests.integration.openai_servers import (
    API_KEY,
    SSE,
    ScriptedServer,
    delta,
    failure,
    make_provider,
    sse,
)


@pytest.mark.parametrize(
    ("status", "body", "message", "retryable"),
    [
        (
            500,
            {"error": {"message": "The server had an error", "type": "server_error"}},
            "Provider returned HTTP 500: The server had an error",
            True,
        ),
        (
            429,
            {"error": {"message": "Rate limit reached for requests", "type": "requests"}},
            "Provider returned HTTP 429: Rate limit reached for requests",
            True,
        ),
        (
            400,
            {"error": {"message": "The model `nope` does not exist", "type": "invalid_request"}},
            "Provider returned HTTP 400: The model `nope` does not exist",
            False,
        ),
        (
            408,
            {"error": "request timed out"},
            "Provider returned HTTP 408: request timed out",
            True,
        ),
        (409, {}, "Provider returned HTTP 409: Conflict", True),
        (
            422,
            {"object": "error", "message": "messages: field required"},
            "Provider returned HTTP 422: messages: field required",
            False,
        ),
    ],
    ids=["500", "429", "400", "408-error-string", "409-no-message", "422-vllm-shape"],
)
def test_http_errors_carry_the_status_and_the_servers_message(
    scripted: ScriptedServer,
    provider: OpenAICompatibleProvider,
    status: int,
    body: Any,
    message: str,
    retryable: bool,
) -> None:
    scripted.answer(status, body)

    error = failure(provider)

    assert error.message == message
    assert error.retryable is retryable
    assert str(error) == message


def test_an_error_status_from_the_fake_server_is_retryable_with_its_message(
    fake: FakeOpenAI,
) -> None:
    error = failure(make_provider(fake.base_url), prompt="fail [status=503]")

    assert error.message == "Provider returned HTTP 503: Fake error 503"
    assert error.retryable is True


def test_an_error_body_that_is_not_json_falls_back_to_the_reason_phrase(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    scripted.answer_raw(503, "<html>upstream down</html>", content_type="text/html")

    error = failure(provider)

    assert error.message == "Provider returned HTTP 503: Service Unavailable"
    assert error.retryable is True


def test_an_api_key_echoed_by_the_server_never_reaches_the_error_message(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    scripted.answer(401, {"error": {"message": f"Incorrect API key provided: {API_KEY}."}})

    error = failure(provider)

    assert error.message == "Provider returned HTTP 401: Incorrect API key provided: ***."
    assert error.retryable is False
    assert API_KEY not in str(error)


def test_a_long_error_message_is_cut_to_one_readable_line(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    scripted.answer(500, {"error": {"message": "line\n" * 500}})

    error = failure(provider)

    assert error.message.startswith("Provider returned HTTP 500: line line")
    assert error.message.endswith("...")
    assert "\n" not in error.message
    assert len(error.message) <= 200


@pytest.mark.parametrize(
    "content",
    [
        "this is not json",
        json.dumps({"id": "chatcmpl-1"}),
        json.dumps({"choices": []}),
        json.dumps({"choices": [{"message": {"role": "assistant", "content": None}}]}),
        json.dumps(["not", "an", "object"]),
    ],
    ids=["not-json", "no-choices", "empty-choices", "null-content", "json-list"],
)
def test_a_json_success_without_an_answer_is_a_malformed_response(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider, content: str
) -> None:
    scripted.answer_raw(200, content, content_type="application/json")

    error = failure(provider)

    assert error.message == "Provider returned a malformed response"
    assert error.retryable is False


def test_a_malformed_response_still_reports_the_tokens_it_cost(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    scripted.answer(200, {"choices": [], "usage": {"total_tokens": 40}})

    assert failure(provider).tokens_used == 40


@pytest.mark.parametrize(
    "text",
    [
        sse(delta("Bon"), done=False) + "data: {not json\n\ndata: [DONE]\n\n",
        sse(delta("Bon"), ["a", "list"]),
        sse({"choices": [], "usage": {"total_tokens": 5}}),
    ],
    ids=["chunk-not-json", "chunk-not-an-object", "no-choice-at-all"],
)
def test_a_stream_with_a_broken_chunk_or_no_answer_is_a_malformed_response(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider, text: str
) -> None:
    scripted.answer_raw(200, text, content_type=SSE)

    error = failure(provider)

    assert error.message == "Provider returned a malformed response"
    assert error.retryable is False


def test_a_stream_that_ends_before_done_is_a_retryable_connection_failure(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    scripted.answer_raw(200, sse(delta("Bon"), done=False), content_type=SSE)

    error = failure(provider)

    assert error.message == ("Provider connection failed: the answer stream ended before [DONE]")
    assert error.retryable is True


def test_a_stream_cut_by_the_server_is_a_retryable_connection_failure(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    scripted.answer_raw(200, sse(delta("Bon"), done=False), content_type=SSE)
    scripted.cut = True

    error = failure(provider)

    assert error.message.startswith("Provider connection failed: ")
    assert error.retryable is True


def test_an_error_sent_inside_the_stream_is_retryable_with_its_message(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    text = sse(delta("Bon"), {"error": {"message": f"overloaded ({API_KEY})"}})
    scripted.answer_raw(200, text, content_type=SSE)

    error = failure(provider)

    assert error.message == "Provider stream failed: overloaded (***)"
    assert error.retryable is True


def test_a_slow_server_times_out_after_the_providers_timeout(scripted: ScriptedServer) -> None:
    scripted.delay_s = 1.0

    started = time.monotonic()
    error = failure(make_provider(scripted.base_url, timeout_s=0.2))
    elapsed = time.monotonic() - started

    assert error.message == "Provider timed out after 0.2s"
    assert error.retryable is True
    assert elapsed < 0.9


def test_a_closed_port_is_a_retryable_unreachable_error() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    error = failure(make_provider(f"http://127.0.0.1:{port}/v1"))

    assert error.message.startswith("Provider unreachable: ")
    assert len(error.message) > len("Provider unreachable: ")
    assert error.retryable is True
    assert API_KEY not in error.message


def test_a_base_url_without_an_http_scheme_is_an_invalid_url_not_worth_retrying() -> None:
    error = failure(make_provider("ftp://models.example/v1"))

    assert error.message.startswith("Provider URL is invalid: ")
    assert error.retryable is False
