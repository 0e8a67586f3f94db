"""What the tests of rate limits and caps under real concurrency share: bursts of requests
sent all at once, tenant limits set through the admin API, and servers on the same stores."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from server.ratelimit import DEFAULT_TIERS, Tier
from server.settings import Settings
from tests.e2e.access_helpers import ADMIN_TOKEN
from tests.e2e.harness import ServerThread, running_rest, running_server, token

# Refill is one token per 5 s: a burst sees the bucket, not its refill.
BURST = 5
TIERS = {**DEFAULT_TIERS, "tiny": Tier(rate=0.2, burst=BURST)}
TIMEOUT_S = 30


def tenant_bearer(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(f'user-of-{tenant}', tenant=tenant)}"}


@dataclass(frozen=True)
class Shot:
    """One request of a burst: where it goes and as whom."""

    base_url: str
    method: str
    path: str
    headers: dict[str, str]
    json: Any = None


def burst(shots: Sequence[Shot]) -> list[httpx.Response]:
    """Send every request at once, each on its own connection; the responses in order."""

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(shots) + 10)
        async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=limits) as client:
            go = asyncio.Event()

            async def send(shot: Shot) -> httpx.Response:
                await go.wait()
                return await client.request(
                    shot.method, shot.base_url + shot.path, headers=shot.headers, json=shot.json
                )

            tasks = [asyncio.create_task(send(shot)) for shot in shots]
            await asyncio.sleep(0)
            go.set()
            return list(await asyncio.gather(*tasks))

    return asyncio.run(send_all())


def set_limits(base_url: str, tenant: str, **limits: Any) -> dict[str, Any]:
    response = httpx.put(
        f"{base_url}/admin/tenants/{tenant}/limits",
        json=limits,
        headers={"X-Admin-API-Key": ADMIN_TOKEN},
        timeout=TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@contextmanager
def servers(settings: Settings, count: int) -> Iterator[list[tuple[ServerThread, str]]]:
    """`count` gRPC servers on the same stores, each with its own REST shim."""
    with ExitStack() as stack:
        started = []
        for _ in range(count):
            server = stack.enter_context(running_server(settings, in_process_workers=False))
            rest = stack.enter_context(running_rest(f"127.0.0.1:{server.port}"))
            started.append((server, rest.url))
        yield started


@pytest.fixture
def limited_settings(scaled_settings: Settings) -> Settings:
    """PostgreSQL + Redis with the admin API on and a tiny tier to place tenants in."""
    return scaled_settings.model_copy(
        update={"admin_token": SecretStr(ADMIN_TOKEN), "rate_tiers": TIERS}
    )
