"""The OpenAI-compatible provider against a real local chat-completions server."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from server.providers.base import ProviderError
from server.providers.openai_compat import OpenAICompatibleProvider

API_KEY = "sk-test-0123456789abcdef"
MODEL = "test-model"

OK_BODY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Bonjour"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 21, "completion_tokens": 2, "total_tokens": 23},
}


@dataclass
class Received:
    """One request the fake server got."""

    path: str
    headers: dict[str, str]
    body: Any
    client_port: int


@dataclass
class FakeChatServer:
    """A chat-completions server whose next answers each test scripts."""

    base_url: str = ""
    status: int = 200
    content: bytes = b""
    content_type: str = "application/json"
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)

    def answer(self, status: int, body: Any) -> None:
        """Answer every request with `status` and `body` as JSON."""
        self.answer_raw(status, json.dumps(body), content_type="application/json")

    def answer_raw(self, status: int, text: str, *, content_type: str = "text/plain") -> None:
        """Answer every request with `status` and `text` as is."""
        self.status = status
        self.content = text.encode()
        self.content_type = content_type


def _app(fake: FakeChatServer) -> FastAPI:
    """The FastAPI app that records requests and plays the fake's script."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        raw = await request.body()
        port = request.client.port if request.client else 0
        fake.received.append(
            Received(request.url.path, dict(request.headers), json.loads(raw), port)
        )
        if fake.delay_s:
            await asyncio.sleep(fake.delay_s)
        return Response(fake.content, status_code=fake.status, media_type=fake.content_type)

    return app


@pytest.fixture(scope="module")
def chat_server() -> Iterator[FakeChatServer]:
    """A real HTTP server on a free local port, for the whole module."""
    fake = FakeChatServer()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    fake.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    config = uvicorn.Config(_app(fake), log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the fake chat-completions server did not start")
        time.sleep(0.01)
    yield fake
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


@pytest.fixture
def fake(chat_server: FakeChatServer) -> FakeChatServer:
    """The module's server, reset to answer OK_BODY at once."""
    chat_server.answer(200, OK_BODY)
    chat_server.delay_s = 0.0
    chat_server.received.clear()
    return chat_server


@pytest.fixture
def provider(fake: FakeChatServer) -> Iterator[OpenAICompatibleProvider]:
    """A provider with an API key, pointed at the fake server."""
    provider = OpenAICompatibleProvider(
        base_url=fake.base_url, api_key=API_KEY, model=MODEL, timeout_s=5
    )
    yield provider
    provider.close()


def _complete(provider: OpenAICompatibleProvider, timeout_s: float = 5) -> Any:
    """One call with a fixed role and prompt."""
    return provider.complete(
        system="You are a translator.", prompt="Say hello in French", timeout_s=timeout_s
    )


def _failure(provider: OpenAICompatibleProvider, timeout_s: float = 5) -> ProviderError:
    """The ProviderError one call raises."""
    with pytest.raises(ProviderError) as caught:
        _complete(provider, timeout_s)
    return caught.value


def test_a_call_sends_the_model_both_messages_and_the_bearer_key(
    fake: FakeChatServer, provider: OpenAICompatibleProvider
) -> None:
    _complete(provider)

    [request] = fake.received
    assert request.path == "/v1/chat/completions"
    assert request.body == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a translator."},
            {"role": "user", "content": "Say hello in French"},
        ],
    }
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"


def test_no_authorization_header_is_sent_without_an_api_key(fake: FakeChatServer) -> None:
    provider = OpenAICompatibleProvider(
        base_url=fake.base_url, api_key=None, model=MODEL, timeout_s=5
    )
    try:
        _complete(provider)
    finally:
        provider.close()

    [request] = fake.received
    assert "authorization" not in request.headers


def test_a_trailing_slash_on_the_base_url_is_ignored(fake: FakeChatServer) -> None:
    provider = OpenAICompatibleProvider(
        base_url=fake.base_url + "/", api_key=None, model=MODEL, timeout_s=5
    )
    try:
        _complete(provider)
    finally:
        provider.close()

    assert [r.path for r in fake.received] == ["/v1/chat/completions"]


def test_the_answer_text_and_total_tokens_come_from_the_response(
    provider: OpenAICompatibleProvider,
) -> None:
    completion = _complete(provider)

    assert completion.text == "Bonjour"
    assert completion.tokens_used == 23


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
    fake: FakeChatServer, provider: OpenAICompatibleProvider, usage: Any, tokens: int
) -> None:
    body = {key: value for key, value in OK_BODY.items() if key != "usage"}
    if usage is not None:
        body["usage"] = usage
    fake.answer(200, body)

    assert _complete(provider).tokens_used == tokens


def test_consecutive_calls_reuse_one_connection(
    fake: FakeChatServer, provider: OpenAICompatibleProvider
) -> None:
    _complete(provider)
    _complete(provider)

    first, second = fake.received
    assert first.client_port == second.client_port


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
    fake: FakeChatServer,
    provider: OpenAICompatibleProvider,
    status: int,
    body: Any,
    message: str,
    retryable: bool,
) -> None:
    fake.answer(status, body)

    error = _failure(provider)

    assert error.message == message
    assert error.retryable is retryable
    assert str(error) == message


def test_an_error_body_that_is_not_json_falls_back_to_the_reason_phrase(
    fake: FakeChatServer, provider: OpenAICompatibleProvider
) -> None:
    fake.answer_raw(503, "<html>upstream down</html>", content_type="text/html")

    error = _failure(provider)

    assert error.message == "Provider returned HTTP 503: Service Unavailable"
    assert error.retryable is True


def test_an_api_key_echoed_by_the_server_never_reaches_the_error_message(
    fake: FakeChatServer, provider: OpenAICompatibleProvider
) -> None:
    fake.answer(401, {"error": {"message": f"Incorrect API key provided: {API_KEY}."}})

    error = _failure(provider)

    assert error.message == "Provider returned HTTP 401: Incorrect API key provided: ***."
    assert error.retryable is False
    assert API_KEY not in str(error)


def test_a_long_error_message_is_cut_to_one_readable_line(
    fake: FakeChatServer, provider: OpenAICompatibleProvider
) -> None:
    fake.answer(500, {"error": {"message": "line\n" * 500}})

    error = _failure(provider)

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
def test_a_success_without_an_answer_is_a_malformed_response(
    fake: FakeChatServer, provider: OpenAICompatibleProvider, content: str
) -> None:
    fake.answer_raw(200, content, content_type="application/json")

    error = _failure(provider)

    assert error.message == "Provider returned a malformed response"
    assert error.retryable is False


def test_a_malformed_response_still_reports_the_tokens_it_cost(
    fake: FakeChatServer, provider: OpenAICompatibleProvider
) -> None:
    fake.answer(200, {"choices": [], "usage": {"total_tokens": 40}})

    assert _failure(provider).tokens_used == 40


@pytest.mark.parametrize(
    ("provider_timeout_s", "time_left_s"),
    [(0.2, 5.0), (5.0, 0.2)],
    ids=["provider-timeout", "time-left"],
)
def test_a_slow_server_times_out_after_the_shorter_of_the_two_timeouts(
    fake: FakeChatServer, provider_timeout_s: float, time_left_s: float
) -> None:
    fake.delay_s = 1.0
    provider = OpenAICompatibleProvider(
        base_url=fake.base_url, api_key=API_KEY, model=MODEL, timeout_s=provider_timeout_s
    )

    started = time.monotonic()
    try:
        error = _failure(provider, time_left_s)
    finally:
        provider.close()
    elapsed = time.monotonic() - started

    assert error.message == "Provider timed out after 0.2s"
    assert error.retryable is True
    assert elapsed < 0.9


def test_a_closed_port_is_a_retryable_unreachable_error() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    provider = OpenAICompatibleProvider(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, model=MODEL, timeout_s=5
    )

    try:
        error = _failure(provider)
    finally:
        provider.close()

    assert error.message.startswith("Provider unreachable: ")
    assert len(error.message) > len("Provider unreachable: ")
    assert error.retryable is True
    assert API_KEY not in error.message
