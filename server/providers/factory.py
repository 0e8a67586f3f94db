"""Builds the provider the settings choose."""

from __future__ import annotations

from server.providers.base import Provider
from server.providers.builtin import BuiltinProvider
from server.providers.openai_compat import OpenAICompatibleProvider
from server.settings import Settings


def build_provider(settings: Settings) -> Provider:
    """The builtin echo provider, or an OpenAI-compatible client, as `settings.provider` says."""
    if settings.provider == "openai":
        key = settings.openai_api_key
        return OpenAICompatibleProvider(
            base_url=settings.openai_base_url,
            api_key=key.get_secret_value() if key is not None else None,
            model=settings.openai_model,
            timeout_s=settings.openai_timeout_s,
            # One connection per execution the worker runs at once, so none waits for one.
            max_connections=settings.worker_concurrency,
        )
    return BuiltinProvider(latency_ms=settings.builtin_latency_ms)
