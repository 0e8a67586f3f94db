"""A provider for any server that speaks OpenAI's chat-completions protocol."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import httpx

from server.providers.base import Cancelled, Completion, DeltaSink, ProviderError, timed_out

# Status codes worth retrying besides 5xx: request timeout, conflict, rate limit.
_RETRYABLE_STATUS = frozenset({408, 409, 429})
# Error text from a server or a socket can be long; a job's error should stay readable.
_MAX_REASON_CHARS = 200
# How often a cancellable call checks whether its job was cancelled.
_CANCEL_POLL_S = 0.1


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


def _answer_text(body: Any) -> str | None:
    """`choices[0].message.content` if it is there and a string."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


class OpenAICompatibleProvider:
    """Calls `{base_url}/chat/completions` (OpenAI, Groq, DeepSeek, vLLM, Ollama, ...).

    One synchronous client is reused across calls; it is safe to share between threads.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        model: str,
        timeout_s: float,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout_s = timeout_s
        self._api_key = api_key or None
        self._client = client if client is not None else httpx.Client()
        # Calls that can be cancelled run here while the caller watches the cancel.
        self._pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="agentq-openai")

    def complete(
        self,
        *,
        system: str,
        prompt: str,
        timeout_s: float,
        cancel: threading.Event | None = None,
        on_delta: DeltaSink | None = None,
    ) -> Completion:
        """Send one chat completion request and return its answer and token usage.

        The answer is not streamed, so `on_delta` is not called. A cancel stops
        the wait at once; the abandoned request ends on its own timeout.
        """
        if cancel is None:
            return self._request(system=system, prompt=prompt, timeout_s=timeout_s)
        call = self._pool.submit(self._request, system=system, prompt=prompt, timeout_s=timeout_s)
        while True:
            try:
                return call.result(timeout=_CANCEL_POLL_S)
            except concurrent.futures.TimeoutError:
                if cancel.is_set():
                    raise Cancelled from None

    def _request(self, *, system: str, prompt: str, timeout_s: float) -> Completion:
        timeout = min(self.timeout_s, timeout_s)
        if timeout <= 0:
            raise timed_out(timeout)
        payload = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": prompt},
            ],
        }
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            response = self._client.post(
                self.url, json=payload, headers=headers, timeout=httpx.Timeout(timeout)
            )
        except httpx.TimeoutException as exc:
            raise timed_out(timeout) from exc
        except httpx.ConnectError as exc:
            raise self._error(f"Provider unreachable: {exc}", retryable=True) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            # A misconfigured base URL will not fix itself on a retry.
            raise self._error(f"Provider URL is invalid: {exc}", retryable=False) from exc
        except httpx.TransportError as exc:
            # The connection broke mid-request (reset, protocol error); a retry may work.
            raise self._error(f"Provider connection failed: {exc}", retryable=True) from exc
        return self._parse(response)

    def close(self) -> None:
        """Close the HTTP client and its connections."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _parse(self, response: httpx.Response) -> Completion:
        """The completion in a response, or the ProviderError it stands for."""
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if not response.is_success:
            code = response.status_code
            reason = _body_error_message(body) or response.reason_phrase
            message = f"Provider returned HTTP {code}"
            if reason:
                message += f": {reason}"
            retryable = code in _RETRYABLE_STATUS or code >= 500
            raise self._error(message, retryable=retryable)
        tokens = _tokens_used(body)
        text = _answer_text(body)
        if text is None:
            raise ProviderError(
                "Provider returned a malformed response", retryable=False, tokens_used=tokens
            )
        return Completion(text=text, tokens_used=tokens)

    def _error(self, message: str, *, retryable: bool) -> ProviderError:
        """A ProviderError with `message` shortened and the API key blanked out."""
        if self._api_key:
            # Some servers echo the key they rejected; it must not reach a job's error.
            # Blanked before shortening, so that a cut cannot leave part of the key.
            message = message.replace(self._api_key, "***")
        return ProviderError(_shorten(message), retryable=retryable)
