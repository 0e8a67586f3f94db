"""The OpenAI-compatible provider against real local chat-completions servers.

Two servers: a scripted one, whose next answer each test writes (error bodies, broken
streams), and the benchmark's fake (bench/fake_openai.py) for streaming, cancellation
and many calls at once.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from bench.fake_openai import FakeOpenAI
from server.providers.base import Completion, ProviderError
from server.providers.openai_compat import OpenAICompatibleProvider

API_KEY = "sk-test-0123456789abcdef"
MODEL = "test-model"
SYSTEM = "You are a translator."
PROMPT = "Say hello in French"
SSE = "text/event-stream"

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


def _delta(text: str | None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def _sse(*chunks: Any, done: bool = True) -> str:
    """An event stream of `chunks` as JSON, then `[DONE]` unless told otherwise."""
    events = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks]
    if done:
        events.append("data: [DONE]\n\n")
    return "".join(events)


ROLE_CHUNK = {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}
USAGE_CHUNK = {"choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": 2}}
OK_STREAM = _sse(ROLE_CHUNK, _delta("Bon"), _delta("jour"), USAGE_CHUNK)


@dataclass
class Received:
    """One request the scripted server got."""

    path: str
    headers: dict[str, str]
    body: Any
    client_port: int


@dataclass
class ScriptedServer:
    """A chat-completions server whose next answers each test scripts."""

    base_url: str = ""
    status: int = 200
    content: bytes = b""
    content_type: str = SSE
    delay_s: float = 0.0
    # Cut the connection after sending the content, without ending the body.
    cut: bool = False
    received: list[Received] = field(default_factory=list)

    def answer(self, status: int, body: Any) -> None:
        """Answer every request with `status` and `body` as JSON."""
        self.answer_raw(status, json.dumps(body), content_type="application/json")

    def answer_raw(self, status: int, text: str, *, content_type: str = "text/plain") -> None:
        """Answer every request with `status` and `text` as is."""
        self.status = status
        self.content = text.encode()
        self.content_type = content_type


def _app(scripted: ScriptedServer) -> FastAPI:
    """The FastAPI app that records requests and plays the script."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        raw = await request.body()
        port = request.client.port if request.client else 0
        scripted.received.append(
            Received(request.url.path, dict(request.headers), json.loads(raw), port)
        )
        if scripted.delay_s:
            await asyncio.sleep(scripted.delay_s)
        if scripted.cut:
            return StreamingResponse(_cut_short(scripted.content), media_type=SSE)
        return Response(
            scripted.content, status_code=scripted.status, media_type=scripted.content_type
        )

    return app


async def _cut_short(content: bytes) -> AsyncIterator[bytes]:
    """Send `content`, then fail: the server drops the connection mid-body."""
    yield content
    raise ConnectionAbortedError("the scripted server cuts the stream")


@pytest.fixture(scope="module")
def scripted_server() -> Iterator[ScriptedServer]:
    """A real HTTP server on a free local port, for the whole module."""
    scripted = ScriptedServer()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    scripted.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    # The cut stream is an error uvicorn would log with a traceback.
    config = uvicorn.Config(_app(scripted), log_level="critical", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the scripted chat-completions server did not start")
        time.sleep(0.01)
    yield scripted
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


@pytest.fixture
def scripted(scripted_server: ScriptedServer) -> ScriptedServer:
    """The module's scripted server, reset to stream "Bonjour" at once with usage."""
    scripted_server.answer_raw(200, OK_STREAM, content_type=SSE)
    scripted_server.delay_s = 0.0
    scripted_server.cut = False
    scripted_server.received.clear()
    return scripted_server


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(chunks=4) as fake:
        yield fake


@pytest.fixture
def fake(fake_openai: FakeOpenAI) -> FakeOpenAI:
    """The benchmark's fake server, answering at once, with its counters zeroed."""
    fake_openai.reset()
    return fake_openai


def _provider(
    base_url: str,
    *,
    api_key: str | None = API_KEY,
    timeout_s: float = 5,
    max_connections: int = 8,
) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        base_url=base_url,
        api_key=api_key,
        model=MODEL,
        timeout_s=timeout_s,
        max_connections=max_connections,
    )


@pytest.fixture
def provider(scripted: ScriptedServer) -> OpenAICompatibleProvider:
    """A provider with an API key, pointed at the scripted server."""
    return _provider(scripted.base_url)


def _complete(
    provider: OpenAICompatibleProvider, *, prompt: str = PROMPT, deltas: list[str] | None = None
) -> Completion:
    """One call on a fresh event loop, closing the provider's client after it."""

    async def call() -> Completion:
        try:
            sink = deltas.append if deltas is not None else None
            return await provider.complete(system=SYSTEM, prompt=prompt, on_delta=sink)
        finally:
            await provider.aclose()

    return asyncio.run(call())


def _failure(provider: OpenAICompatibleProvider, *, prompt: str = PROMPT) -> ProviderError:
    """The ProviderError one call raises."""
    with pytest.raises(ProviderError) as caught:
        _complete(provider, prompt=prompt)
    return caught.value


def test_a_call_asks_for_a_stream_with_usage_and_sends_both_messages_and_the_key(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    _complete(provider)

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
    _complete(_provider(scripted.base_url, api_key=None))

    [request] = scripted.received
    assert "authorization" not in request.headers


def test_a_trailing_slash_on_the_base_url_is_ignored(scripted: ScriptedServer) -> None:
    _complete(_provider(scripted.base_url + "/"))

    assert [r.path for r in scripted.received] == ["/v1/chat/completions"]


def test_streamed_pieces_reach_on_delta_and_join_into_the_answer(
    provider: OpenAICompatibleProvider,
) -> None:
    deltas: list[str] = []

    completion = _complete(provider, deltas=deltas)

    # The role-only first chunk carries no text and is not passed on.
    assert deltas == ["Bon", "jour"]
    assert completion == Completion(text="Bonjour", tokens_used=23)


def test_comments_other_fields_and_data_without_a_space_are_read_as_sse(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    text = (
        ": keep-alive\n\nevent: message\nid: 1\n"
        + f"data:{json.dumps(_delta('Bon'))}\n\n"
        + _sse(
            _delta(None), _delta(""), _delta("jour"), {"choices": [], "usage": {"total_tokens": 9}}
        )
    )
    scripted.answer_raw(200, text, content_type=SSE)
    deltas: list[str] = []

    completion = _complete(provider, deltas=deltas)

    assert deltas == ["Bon", "jour"]
    assert completion == Completion(text="Bonjour", tokens_used=9)


def test_half_a_surrogate_pair_in_a_chunk_is_still_read(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    # A model may cut an emoji in two; the JSON escape of its first half is valid JSON.
    half = '{"choices": [{"index": 0, "delta": {"content": "ok \\ud83d"}}]}'
    scripted.answer_raw(200, f"data: {half}\n\ndata: [DONE]\n\n", content_type=SSE)

    assert _complete(provider).text == "ok \ud83d"


def test_a_stream_without_usage_counts_zero_tokens(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    scripted.answer_raw(200, _sse(ROLE_CHUNK, _delta("Bon"), _delta("jour")), content_type=SSE)

    assert _complete(provider) == Completion(text="Bonjour", tokens_used=0)


def test_a_server_that_ignores_stream_is_read_as_one_json_answer(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    scripted.answer(200, OK_BODY)
    deltas: list[str] = []

    completion = _complete(provider, deltas=deltas)

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

    assert _complete(provider).tokens_used == tokens


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

    error = _failure(provider)

    assert error.message == message
    assert error.retryable is retryable
    assert str(error) == message


def test_an_error_status_from_the_fake_server_is_retryable_with_its_message(
    fake: FakeOpenAI,
) -> None:
    error = _failure(_provider(fake.base_url), prompt="fail [status=503]")

    assert error.message == "Provider returned HTTP 503: Fake error 503"
    assert error.retryable is True


def test_an_error_body_that_is_not_json_falls_back_to_the_reason_phrase(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    scripted.answer_raw(503, "<html>upstream down</html>", content_type="text/html")

    error = _failure(provider)

    assert error.message == "Provider returned HTTP 503: Service Unavailable"
    assert error.retryable is True


def test_an_api_key_echoed_by_the_server_never_reaches_the_error_message(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    scripted.answer(401, {"error": {"message": f"Incorrect API key provided: {API_KEY}."}})

    error = _failure(provider)

    assert error.message == "Provider returned HTTP 401: Incorrect API key provided: ***."
    assert error.retryable is False
    assert API_KEY not in str(error)


def test_a_long_error_message_is_cut_to_one_readable_line(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    scripted.answer(500, {"error": {"message": "line\n" * 500}})

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
def test_a_json_success_without_an_answer_is_a_malformed_response(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider, content: str
) -> None:
    scripted.answer_raw(200, content, content_type="application/json")

    error = _failure(provider)

    assert error.message == "Provider returned a malformed response"
    assert error.retryable is False


def test_a_malformed_response_still_reports_the_tokens_it_cost(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    scripted.answer(200, {"choices": [], "usage": {"total_tokens": 40}})

    assert _failure(provider).tokens_used == 40


@pytest.mark.parametrize(
    "text",
    [
        _sse(_delta("Bon"), done=False) + "data: {not json\n\ndata: [DONE]\n\n",
        _sse(_delta("Bon"), ["a", "list"]),
        _sse({"choices": [], "usage": {"total_tokens": 5}}),
    ],
    ids=["chunk-not-json", "chunk-not-an-object", "no-choice-at-all"],
)
def test_a_stream_with_a_broken_chunk_or_no_answer_is_a_malformed_response(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider, text: str
) -> None:
    scripted.answer_raw(200, text, content_type=SSE)

    error = _failure(provider)

    assert error.message == "Provider returned a malformed response"
    assert error.retryable is False


def test_a_stream_that_ends_before_done_is_a_retryable_connection_failure(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    scripted.answer_raw(200, _sse(_delta("Bon"), done=False), content_type=SSE)

    error = _failure(provider)

    assert error.message == ("Provider connection failed: the answer stream ended before [DONE]")
    assert error.retryable is True


def test_a_stream_cut_by_the_server_is_a_retryable_connection_failure(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    scripted.answer_raw(200, _sse(_delta("Bon"), done=False), content_type=SSE)
    scripted.cut = True

    error = _failure(provider)

    assert error.message.startswith("Provider connection failed: ")
    assert error.retryable is True


def test_an_error_sent_inside_the_stream_is_retryable_with_its_message(
    scripted: ScriptedServer, provider: OpenAICompatibleProvider
) -> None:
    text = _sse(_delta("Bon"), {"error": {"message": f"overloaded ({API_KEY})"}})
    scripted.answer_raw(200, text, content_type=SSE)

    error = _failure(provider)

    assert error.message == "Provider stream failed: overloaded (***)"
    assert error.retryable is True


def test_a_slow_server_times_out_after_the_providers_timeout(scripted: ScriptedServer) -> None:
    scripted.delay_s = 1.0

    started = time.monotonic()
    error = _failure(_provider(scripted.base_url, timeout_s=0.2))
    elapsed = time.monotonic() - started

    assert error.message == "Provider timed out after 0.2s"
    assert error.retryable is True
    assert elapsed < 0.9


def test_a_closed_port_is_a_retryable_unreachable_error() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    error = _failure(_provider(f"http://127.0.0.1:{port}/v1"))

    assert error.message.startswith("Provider unreachable: ")
    assert len(error.message) > len("Provider unreachable: ")
    assert error.retryable is True
    assert API_KEY not in error.message


def test_a_base_url_without_an_http_scheme_is_an_invalid_url_not_worth_retrying() -> None:
    error = _failure(_provider("ftp://models.example/v1"))

    assert error.message.startswith("Provider URL is invalid: ")
    assert error.retryable is False


def test_the_fake_servers_stream_arrives_in_order_with_its_usage(fake: FakeOpenAI) -> None:
    deltas: list[str] = []

    completion = _complete(_provider(fake.base_url), prompt="count [chunks=50]", deltas=deltas)

    assert len(deltas) == 50
    assert "".join(deltas) == completion.text
    assert completion.text.startswith("Echo: count [chunks=50]")
    # The fake counts words: 4 of the role and 2 of the prompt, and the answer's 3.
    assert completion.tokens_used == 4 + 2 + 3


def test_a_cancelled_call_stops_at_once_and_releases_its_connection(fake: FakeOpenAI) -> None:
    provider = _provider(fake.base_url, timeout_s=30)

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
    provider = _provider(fake.base_url, timeout_s=30, max_connections=300)

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
    provider = _provider(fake.base_url, max_connections=10)

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
