"""Rate limits and concurrency caps under real concurrency (issue 5).

Bursts go over real HTTP (asyncio + httpx, all requests in flight at once) to the REST shim
in front of real gRPC servers. On PostgreSQL + Redis the token buckets live in Redis and
are shared by every server; on the embedded default they live in memory. No worker runs in
the cap tests, so every admitted job stays pending and counts against the cap.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pydantic import SecretStr
from sqlalchemy import func, select

from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import agent_service_pb2_grpc as agents_grpc
from server.ratelimit import DEFAULT_TIERS, Tier
from server.settings import Settings
from server.store.models import Job, JobStatus
from tests.e2e.harness import ServerThread, running_rest, running_server, settings_for, token

ADMIN_TOKEN = "e2e-admin-token-0123456789abcdefghijklmnop"
# Refill is one token per 5 s: a burst sees the bucket, not its refill.
BURST = 5
TIERS = {**DEFAULT_TIERS, "tiny": Tier(rate=0.2, burst=BURST)}
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
AGENT = {"name": "helper", "role": "You are a helpful assistant."}
TIMEOUT_S = 30
UNFINISHED = (JobStatus.PENDING, JobStatus.RUNNING)


def _bearer(tenant: str) -> dict[str, str]:
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


def _assert_rate_headers(response: httpx.Response, *, limit: int) -> tuple[int, int]:
    """The three headers are there and sane; returns (remaining, reset)."""
    missing = [h for h in RATE_HEADERS if h not in response.headers]
    assert not missing, (response.status_code, missing, dict(response.headers))
    assert response.headers["X-RateLimit-Limit"] == str(limit), dict(response.headers)
    remaining = int(response.headers["X-RateLimit-Remaining"])
    reset = int(response.headers["X-RateLimit-Reset"])
    assert 0 <= remaining <= limit
    # Unix seconds, when the bucket is full again: not a delta, not in the past.
    now = time.time()
    assert now - 1 <= reset <= now + limit / TIERS["tiny"].rate + 2, (reset, now)
    return remaining, reset


def _assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, (response.status_code, response.text)
    body = response.json()
    assert body["detail"] == "Too many requests"
    assert body["error"] == {"code": "RATE_LIMITED", "message": "Too many requests", "status": 429}
    retry_after = response.headers.get("Retry-After", "")
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 1 / TIERS["tiny"].rate + 1, (
        response.headers
    )
    remaining, reset = _assert_rate_headers(response, limit=BURST)
    assert remaining == 0
    # The bucket is empty, so it is full again no sooner than a refill of the whole burst
    # less one token away.
    assert reset >= time.time() + (BURST - 1) / TIERS["tiny"].rate - 2


def _set_limits(base_url: str, tenant: str, **limits: Any) -> dict[str, Any]:
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


# --- 5. rate limits -----------------------------------------------------------------


def test_a_burst_from_one_tenant_admits_exactly_its_bucket_and_another_tenant_is_unaffected(
    limited_settings: Settings,
) -> None:
    with servers(limited_settings, 1) as [(_, url)]:
        for tenant in ("tenant-a", "tenant-b"):
            limits = _set_limits(url, tenant, tier="tiny")
            assert (limits["tier"], limits["burst"], limits["rate_per_second"]) == (
                "tiny",
                BURST,
                0.2,
            )
        # Tenant A sends six times its bucket; tenant B, in the same tier, less than its
        # own, interleaved with A's.
        a_shots = [Shot(url, "GET", "/api/v1/agents", _bearer("tenant-a")) for _ in range(30)]
        b_shots = [Shot(url, "GET", "/api/v1/agents", _bearer("tenant-b")) for _ in range(4)]
        shots = a_shots[:15] + b_shots + a_shots[15:]
        responses = burst(shots)
        a, b = responses[:15] + responses[19:], responses[15:19]

        assert Counter(r.status_code for r in a) == {200: BURST, 429: 30 - BURST}, [
            (r.status_code, r.text) for r in a if r.status_code not in (200, 429)
        ]
        admitted = [r for r in a if r.status_code == 200]
        # Each admitted request took its own token: the remainders count down once each.
        assert sorted(_assert_rate_headers(r, limit=BURST)[0] for r in admitted) == list(
            range(BURST)
        )
        for response in a:
            if response.status_code == 429:
                _assert_rate_limited(response)
        assert [r.status_code for r in b] == [200] * 4, [r.text for r in b]
        assert sorted(_assert_rate_headers(r, limit=BURST)[0] for r in b) == [1, 2, 3, 4]

        # An error answered by the server carries the headers too (B's last token).
        unknown = httpx.get(
            f"{url}/api/v1/agents/{uuid.uuid4()}", headers=_bearer("tenant-b"), timeout=TIMEOUT_S
        )
        assert unknown.status_code == 404, unknown.text
        assert _assert_rate_headers(unknown, limit=BURST)[0] == 0
        # And now B is out of tokens as well; A still is.
        _assert_rate_limited(httpx.get(f"{url}/api/v1/agents", headers=_bearer("tenant-b")))
        _assert_rate_limited(httpx.get(f"{url}/api/v1/agents", headers=_bearer("tenant-a")))
        # A tenant left in the default tier never noticed.
        other = httpx.get(f"{url}/api/v1/agents", headers=_bearer("tenant-c"))
        assert other.status_code == 200, other.text
        assert other.headers["X-RateLimit-Limit"] == str(TIERS["unlimited"].burst)


def test_every_kind_of_tenant_request_carries_the_rate_limit_headers(
    limited_settings: Settings,
) -> None:
    with servers(limited_settings, 1) as [(_, url)]:
        headers = _bearer("headers")
        with httpx.Client(base_url=url, timeout=TIMEOUT_S, headers=headers) as client:
            agent = client.post("/api/v1/agents", json=AGENT)
            agent_id = agent.json()["id"]
            queued = client.post(f"/api/v1/agents/{agent_id}/execute", json={"prompt": "Hi"})
            job_id = queued.json()["job_id"]
            responses = {
                "create agent": agent,
                "execute": queued,
                "get agent": client.get(f"/api/v1/agents/{agent_id}"),
                "list agents": client.get("/api/v1/agents"),
                "get job": client.get(f"/api/v1/jobs/{job_id}"),
                "list jobs": client.get("/api/v1/jobs"),
                "cancel job": client.post(f"/api/v1/jobs/{job_id}/cancel"),
                "cancel again (409)": client.post(f"/api/v1/jobs/{job_id}/cancel"),
                "unknown job (404)": client.get(f"/api/v1/jobs/{uuid.uuid4()}"),
                "bad field (422)": client.post("/api/v1/agents", json={**AGENT, "max_depth": 11}),
                "delete agent": client.delete(f"/api/v1/agents/{agent_id}"),
            }
    limit = TIERS["unlimited"].burst  # the harness's default tier
    wrong = {}
    for what, response in responses.items():
        missing = [h for h in RATE_HEADERS if h not in response.headers]
        if missing or response.headers["X-RateLimit-Limit"] != str(limit):
            wrong[what] = (response.status_code, dict(response.headers))
    assert not wrong, f"responses without the rate-limit headers: {wrong}"


def test_two_servers_share_one_bucket_per_tenant_in_redis(limited_settings: Settings) -> None:
    with servers(limited_settings, 2) as [(_, first), (_, second)]:
        _set_limits(first, "shared", tier="tiny")
        shots = [
            Shot(url, "GET", "/api/v1/agents", _bearer("shared"))
            for _ in range(10)
            for url in (first, second)
        ]
        responses = burst(shots)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: BURST, 429: 20 - BURST}, statuses
    for response in responses:
        if response.status_code == 429:
            _assert_rate_limited(response)
    # Both servers refused from the one bucket: each saw at least its share of the overflow.
    refused = Counter(s.base_url for s, r in zip(shots, responses, strict=True) if not r.is_success)
    assert set(refused) == {first, second} and min(refused.values()) >= 10 - BURST, refused


def test_over_its_rate_a_grpc_caller_gets_resource_exhausted_with_retry_and_quota_details(
    limited_settings: Settings,
) -> None:
    with servers(limited_settings, 1) as [(server, url)]:
        _set_limits(url, "grpc-tenant", tier="tiny")
        metadata = (("authorization", _bearer("grpc-tenant")["Authorization"]),)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = agents_grpc.AgentServiceStub(channel)
            request = agents_pb.ListAgentsRequest()
            for expected_remaining in reversed(range(BURST)):
                _, call = stub.ListAgents.with_call(request, metadata=metadata, timeout=10)
                trailers = dict(call.trailing_metadata())
                assert trailers["x-ratelimit-limit"] == str(BURST)
                assert trailers["x-ratelimit-remaining"] == str(expected_remaining)
            with pytest.raises(grpc.RpcError) as raised:
                stub.ListAgents(request, metadata=metadata, timeout=10)
    error = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "Too many requests"
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in the trailers"
    found: dict[str, Any] = {}
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
            error_details_pb2.QuotaFailure,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.__name__] = message
    assert set(found) >= {"ErrorInfo", "RetryInfo", "QuotaFailure"}, status.details
    assert (found["ErrorInfo"].reason, found["ErrorInfo"].domain) == ("RATE_LIMITED", "agentq")
    delay = found["RetryInfo"].retry_delay
    assert 1 <= delay.seconds + delay.nanos / 1e9 <= 1 / TIERS["tiny"].rate + 1
    [violation] = found["QuotaFailure"].violations
    assert "grpc-tenant" in violation.subject
    assert str(BURST) in violation.description
    sent_back: Any = error.trailing_metadata()
    trailers = dict(sent_back or ())
    assert trailers.get("x-ratelimit-remaining") == "0", trailers


def test_on_the_embedded_default_the_bucket_lives_in_memory_and_admits_exactly_its_size(
    tmp_path: Path,
) -> None:
    settings = settings_for(
        database_url=f"sqlite:///{tmp_path / 'agentq.db'}", rate_tiers=TIERS, default_tier="tiny"
    )
    with (
        running_server(settings, in_process_workers=True) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
    ):
        responses = burst(
            [Shot(rest.url, "GET", "/api/v1/agents", _bearer("embedded")) for _ in range(15)]
        )
        other = httpx.get(f"{rest.url}/api/v1/agents", headers=_bearer("neighbour"))
    assert Counter(r.status_code for r in responses) == {200: BURST, 429: 15 - BURST}
    for response in responses:
        if response.status_code == 429:
            _assert_rate_limited(response)
    assert other.status_code == 200, other.text


# --- 6. the cap on unfinished jobs ---------------------------------------------------


def _unfinished(server: ServerThread, tenant: str) -> int:
    query = select(func.count()).where(Job.tenant_id == tenant, Job.status.in_(UNFINISHED))
    with server.engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def _agent(url: str, tenant: str) -> str:
    created = httpx.post(
        f"{url}/api/v1/agents", json=AGENT, headers=_bearer(tenant), timeout=TIMEOUT_S
    )
    assert created.status_code == 201, created.text
    agent_id: str = created.json()["id"]
    return agent_id


def _submits(url: str, tenant: str, agent_id: str, count: int) -> list[httpx.Response]:
    shot = Shot(
        url, "POST", f"/api/v1/agents/{agent_id}/execute", _bearer(tenant), {"prompt": "Hi"}
    )
    return burst([shot] * count)


def _assert_capped(responses: list[httpx.Response], *, cap: int) -> None:
    statuses = Counter(r.status_code for r in responses)
    expected = Counter({202: cap, 429: len(responses) - cap})
    assert statuses == +expected, (
        statuses,
        [r.text for r in responses if r.status_code not in (202, 429)][:3],
    )
    for response in responses:
        if response.status_code != 429:
            continue
        body = response.json()
        assert body["error"]["code"] == "RATE_LIMITED", body
        assert str(cap) in body["error"]["message"].split(), body  # names the limit
        assert body["detail"] == body["error"]["message"]
        retry_after = response.headers.get("Retry-After", "")
        assert retry_after.isdigit() and int(retry_after) >= 1, response.headers


def test_a_hundred_concurrent_submits_against_a_cap_of_ten_admit_exactly_ten(
    limited_settings: Settings,
) -> None:
    with servers(limited_settings, 1) as [(server, url)]:
        limits = _set_limits(url, "capped", max_unfinished_jobs=10)
        assert limits["max_unfinished_jobs"] == 10
        agent_id = _agent(url, "capped")
        responses = _submits(url, "capped", agent_id, 100)
        _assert_capped(responses, cap=10)
        assert _unfinished(server, "capped") == 10
        admitted = {r.json()["job_id"] for r in responses if r.status_code == 202}
        assert len(admitted) == 10
        # The cap is the tenant's alone: a neighbour still submits.
        neighbour = _agent(url, "neighbour")
        assert [r.status_code for r in _submits(url, "neighbour", neighbour, 3)] == [202] * 3


def test_the_cap_is_shared_by_two_servers_on_one_database(limited_settings: Settings) -> None:
    with servers(limited_settings, 2) as [(server, first), (_, second)]:
        _set_limits(second, "two-servers", max_unfinished_jobs=7)
        agent_id = _agent(first, "two-servers")
        path = f"/api/v1/agents/{agent_id}/execute"
        shots = [
            Shot(url, "POST", path, _bearer("two-servers"), {"prompt": "Hi"})
            for _ in range(20)
            for url in (first, second)
        ]
        responses = burst(shots)
        _assert_capped(responses, cap=7)
        assert _unfinished(server, "two-servers") == 7


def test_a_cap_of_zero_refuses_every_submit(limited_settings: Settings) -> None:
    with servers(limited_settings, 1) as [(server, url)]:
        agent_id = _agent(url, "frozen")
        limits = _set_limits(url, "frozen", max_unfinished_jobs=0)
        assert limits["max_unfinished_jobs"] == 0
        responses = _submits(url, "frozen", agent_id, 5)
        _assert_capped(responses, cap=0)
        assert _unfinished(server, "frozen") == 0


def test_on_the_embedded_default_thirty_concurrent_submits_against_a_cap_of_five_admit_five(
    tmp_path: Path,
) -> None:
    # The cap from the settings, no override; no worker, so admitted jobs stay pending.
    settings = settings_for(
        database_url=f"sqlite:///{tmp_path / 'agentq.db'}", max_unfinished_jobs=5
    )
    with (
        running_server(settings, in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
    ):
        agent_id = _agent(rest.url, "embedded")
        responses = _submits(rest.url, "embedded", agent_id, 30)
        _assert_capped(responses, cap=5)
        assert _unfinished(server, "embedded") == 5


def test_racing_retries_of_one_idempotent_submit_all_get_its_job_even_at_the_cap(
    limited_settings: Settings,
) -> None:
    # The cap counts jobs, not requests: retries of the one request that was admitted
    # are answered with its job (the contract's Idempotency-Key), never refused as over.
    with servers(limited_settings, 1) as [(server, url)]:
        _set_limits(url, "retrier", max_unfinished_jobs=1)
        agent_id = _agent(url, "retrier")
        headers = {**_bearer("retrier"), "Idempotency-Key": "the-one-request"}
        shot = Shot(url, "POST", f"/api/v1/agents/{agent_id}/execute", headers, {"prompt": "Hi"})
        responses = burst([shot] * 20)
        statuses = Counter(r.status_code for r in responses)
        assert statuses == {202: 20}, (
            statuses,
            [r.text for r in responses if r.status_code != 202][:2],
        )
        assert len({r.json()["job_id"] for r in responses}) == 1
        assert _unfinished(server, "retrier") == 1
