"""A provider for any server that speaks OpenAI's chat-completions protocol, streamed.

It asks for a streamed answer (`"stream": true` with `stream_options.include_usage`),
passes each non-empty `choices[0].delta.content` to `on_delta` and joins them into the
answer. `tokens_used` is the final usage chunk's `total_tokens`, else its
`prompt_tokens + completion_tokens`. When the server reports no usage (some
OpenAI-compatible servers ignore `stream_options`), `tokens_used` is 0: agentq records
only what the provider reports and never estimates. A server that ignores `"stream"` and
answers one `application/json` body is read as such, and `on_delta` is not called.

Errors: timeouts, connection errors and HTTP 408/409/429/5xx are retryable; other 4xx
and malformed answers are not. A stream that stops before `data: [DONE]` (the connection
was cut, or the body ended early) is a retryable connection failure; a chunk that is not
a JSON object is a malformed answer; an error the server sends inside the stream is
retryable, like a 5xx. Messages are one line, at most 200 characters, with the API key
blanked out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from server.providers.base import Completion, DeltaSink, ProviderError, timed_out

# Status codes worth retrying besides 5xx: request timeout, conflict, rate limit.
_RETRYABLE_STATUS = frozenset({408, 409, 429})
# Error text from a server or a socket can be long; a job's error should stay readable.
_MAX_REASON_CHARS = 200
_MALFORMED = "Provider returned a malformed response"


def _shorten(text: str) -> str:
    """`text` on one line, cut to a readable length."""
    flat = " ".join(text.split())
    if len(flat) <= _MAX_REASON_CHARS:
        return flat
    return flat[: _MAX_REASON_CHARS - 3] + "..."


def _body_error_message(body: Any) -> str | None:
    """The error message in an error body, in the shapes OpenAI-like servers use."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    # vLLM answers {"object": "error", "message": ...}.
    message = body.get("message")
    return message if isinstance(message, str) else None


def _as_count(value: Any) -> int | None:
    """`value` if it is a token count, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _tokens_used(body: Any) -> int:
    """Total tokens from `usage`: total_tokens, or prompt + completion, or 0."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return 0
    total = _as_count(usage.get("total_tokens"))
    if total is not None:
        return total
    prompt = _as_count(usage.get("prompt_tokens")) or 0
    completion = _as_count(usage.get("completion_tokens")) or 0
    return prompt + completion


def _first_choice(body: Any) -> dict[str, Any] | None:
    """`choices[0]` if it is there and an object."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    return choices[0]


def _field(holder: Any, name: str) -> Any:
    return holder.get(name) if isinstance(holder, dict) else None


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that gives its connection back when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:
            yield part

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._release()


class _Lanes(httpx.AsyncBaseTransport):
    """Up to `max_connections` keep-alive connections, each in a one-connection transport.

    httpcore 1.0's pool (under httpx) re-examines every connection it holds, polling
    each idle socket, whenever a request starts or ends, so its cost per request grows
    with the pool: 300 calls at once took 8 s against a 1 s server. Here each sits alone
    in its own transport, a free one is taken in constant time, the most recently
    used first, and a call that finds them all busy waits up to the pool timeout.
    """

    def __init__(self, max_connections: int) -> None:
        self._free = asyncio.Semaphore(max_connections)
        self._idle: list[httpx.AsyncHTTPTransport] = []
        self._lanes: list[httpx.AsyncHTTPTransport] = []
        # One TLS context for all: making one loads the CA bundle, which is slow.
        self._ssl_context = httpx.create_ssl_context()

    def _take(self) -> httpx.AsyncHTTPTransport:
        if self._idle:
            return self._idle.pop()
        lane = httpx.AsyncHTTPTransport(
            verify=self._ssl_context,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        self._lanes.append(lane)
        return lane

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pool_timeout = request.extensions.get("timeout", {}).get("pool")
        try:
            async with asyncio.timeout(pool_timeout):
                await self._free.acquire()
        except TimeoutError as exc:
            raise httpx.PoolTimeout("No connection came free in time", request=request) from exc
        lane = self._take()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._idle.append(lane)
                self._free.release()

        try:
            response = await lane.handle_async_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_ReleasingStream(response.stream, release),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        lanes, self._lanes, self._idle = self._lanes, [], []
        for lane in lanes:
            await lane.aclose()


class _AnswerStream:
    """The answer being put together from a response's SSE chunks."""

    def __init__(self, on_delta: DeltaSink | None) -> None:
        self.on_delta = on_delta
        self.pieces: list[str] = []
        self.tokens = 0
        self.saw_choice = False
        self.done = False
        # The message of an error the server sent inside the stream, which ends it.
        self.error: str | None = None

    def take(self, line: str) -> None:
        """Take one line of the event stream; ignores comments and other fields."""
        if not line.startswith("data:"):
            return
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return
        try:
            chunk: Any = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            raise ProviderError(_MALFORMED, retryable=False, tokens_used=self.tokens)
        if "usage" in chunk:
            self.tokens = _tokens_used(chunk) or self.tokens
        choice = _first_choice(chunk)
        if choice is None:
            self.error = _body_error_message(chunk)
            return
        self.saw_choice = True
        content = _field(choice.get("delta"), "content")
        if isinstance(content, str) and content:
            self.pieces.append(content)
            if self.on_delta is not None:
                self.on_delta(content)


class OpenAICompatibleProvider:
    """Calls `{base_url}/chat/completions` (OpenAI, Groq, DeepSeek, vLLM, Ollama, ...).

    One `httpx.AsyncClient` serves every call, made on the first call's event loop: it
    keeps up to `max_connections` connections open, as many as calls run at once.
    `timeout_s` bounds each phase of a request (connect, each read, each write, and the
    wait for a free connection); the job's time limit is the engine's, not this.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        model: str,
        timeout_s: float,
        max_connections: int,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._api_key = api_key or None
        self._client: httpx.AsyncClient | None = None

    def _open_client(self) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._client = httpx.AsyncClient(
            transport=_Lanes(self.max_connections),
            timeout=httpx.Timeout(self.timeout_s),
            headers=headers,
        )
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client and its connections; a later call opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def complete(
        self, *, system: str, prompt: str, on_delta: DeltaSink | None = None
    ) -> Completion:
        """Stream one chat completion, passing each piece to `on_delta` as it arrives.

        Cancelling the call closes its connection at once, so the server stops too.
        """
        client = self._client or self._open_client()
        payload = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": prompt},
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        try:
            async with client.stream("POST", self.url, json=payload) as response:
                return await self._read(response, on_delta)
        except httpx.TimeoutException as exc:
            raise timed_out(self.timeout_s) from exc
        except httpx.ConnectError as exc:
            raise self._error(f"Provider unreachable: {exc}", retryable=True) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            # A misconfigured base URL will not fix itself on a retry.
            raise self._error(f"Provider URL is invalid: {exc}", retryable=False) from exc
        except httpx.TransportError as exc:
            # The connection broke mid-request (reset, cut stream); a retry may work.
            raise self._error(f"Provider connection failed: {exc}", retryable=True) from exc
        except httpx.DecodingError as exc:
            # The body could not be decoded (a broken compressed body, say).
            raise ProviderError(_MALFORMED, retryable=False) from exc

    async def _read(self, response: httpx.Response, on_delta: DeltaSink | None) -> Completion:
        """The completion in a response, or the ProviderError it stands for."""
        if not response.is_success:
            await response.aread()
            raise self._status_error(response)
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aread()
            return self._whole_answer(response)
        answer = _AnswerStream(on_delta)
        async for line in response.aiter_lines():
            # Read on past [DONE] to the end of the body: a connection whose response
            # was left unread is closed instead of going back to the pool.
            if answer.done:
                continue
            answer.take(line)
            if answer.error is not None:
                break
        if answer.error is not None:
            raise self._error(f"Provider stream failed: {answer.error}", retryable=True)
        if not answer.done:
            raise self._error(
                "Provider connection failed: the answer stream ended before [DONE]",
                retryable=True,
            )
        if not answer.saw_choice:
            raise ProviderError(_MALFORMED, retryable=False, tokens_used=answer.tokens)
        return Completion(text="".join(answer.pieces), tokens_used=answer.tokens)

    def _status_error(self, response: httpx.Response) -> ProviderError:
        """The error an unsuccessful status stands for, with the server's reason."""
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        code = response.status_code
        reason = _body_error_message(body) or response.reason_phrase
        message = f"Provider returned HTTP {code}"
        if reason:
            message += f": {reason}"
        return self._error(message, retryable=code in _RETRYABLE_STATUS or code >= 500)

    @staticmethod
    def _whole_answer(response: httpx.Response) -> Completion:
        """The completion in a non-streamed body: `choices[0].message.content`."""
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        tokens = _tokens_used(body)
        text = _field(_field(_first_choice(body), "message"), "content")
        if not isinstance(text, str):
            raise ProviderError(_MALFORMED, retryable=False, tokens_used=tokens)
        return Completion(text=text, tokens_used=tokens)

    def _error(self, message: str, *, retryable: bool) -> ProviderError:
        """A ProviderError with `message` shortened and the API key blanked out."""
        if self._api_key:
            # Some servers echo the key they rejected; it must not reach a job's error.
            # Blanked before shortening, so that a cut cannot leave part of the key.
            message = message.replace(self._api_key, "***")
        return ProviderError(_shorten(message), retryable=retryable)
