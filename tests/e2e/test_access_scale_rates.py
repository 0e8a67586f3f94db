"""Rate limits under real concurrency (issue 5).

Bursts go over real HTTP (asyncio + httpx, all requests in flight at once) to the REST shim
in front of real gRPC servers. On PostgreSQL + Redis the token buckets live in Redis and
are shared by every server; on the embedded default they live in memory.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import agent_service_pb2_grpc as agents_grpc
from server.settings import Settings
from tests.e2e import scale_helpers
from tests.e2e.access_helpers import AGENT
from tests.e2e.harness import running_rest, running_server, settings_for
from tests.e2e.scale_helpers import (
    BURST,
    TIERS,
    TIMEOUT_S,
    Shot,
    burst,
    servers,
    set_limits,
    tenant_bearer,
)

RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")

# pytest finds the fixture among this module's attributes.
limited_settings = scale_helpers.limited_settings


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


# --- 5. rate limits -----------------------------------------------------------------


def test_a_burst_from_one_tenant_admits_exactly_its_bucket_and_another_tenant_is_unaffected(
    limited_settings: Settings,
) -> None:
    with servers(limited_settings, 1) as [(_, url)]:
        for tenant in ("tenant-a", "tenant-b"):
            limits = set_limits(url, tenant, tier="tiny")
            assert (limits["tier"], limits["burst"], limits["rate_per_second"]) == (
                "tiny",
                BURST,
                0.2,
            )
        # Tenant A sends six times its bucket; tenant B, in the same tier, less than its
        # own, interleaved with A's.
        a_shots = [Shot(url, "GET", "/api/v1/agents", tenant_bearer("tenant-a")) for _ in range(30)]
        b_shots = [Shot(url, "GET", "/api/v1/agents", tenant_bearer("tenant-b")) for _ in range(4)]
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
            f"{url}/api/v1/agents/{uuid.uuid4()}",
            headers=tenant_bearer("tenant-b"),
            timeout=TIMEOUT_S,
        )
        assert unknown.status_code == 404, unknown.text
        assert _assert_rate_headers(unknown, limit=BURST)[0] == 0
        # And now B is out of tokens as well; A still is.
        _assert_rate_limited(httpx.get(f"{url}/api/v1/agents", headers=tenant_bearer("tenant-b")))
        _assert_rate_limited(httpx.get(f"{url}/api/v1/agents", headers=tenant_bearer("tenant-a")))
        # A tenant left in the default tier never noticed.
        other = httpx.get(f"{url}/api/v1/agents", headers=tenant_bearer("tenant-c"))
        assert other.status_code == 200, other.text
        assert other.headers["X-RateLimit-Limit"] == str(TIERS["unlimited"].burst)


def test_every_kind_of_tenant_request_carries_the_rate_limit_headers(
    limited_settings: Settings,
) -> None:
    with servers(limited_settings, 1) as [(_, url)]:
        headers = tenant_bearer("headers")
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
        set_limits(first, "shared", tier="tiny")
        shots = [
            Shot(url, "GET", "/api/v1/agents", tenant_bearer("shared"))
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
        set_limits(url, "grpc-tenant", tier="tiny")
        metadata = (("authorization", tenant_bearer("grpc-tenant")["Authorization"]),)
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
            [Shot(rest.url, "GET", "/api/v1/agents", tenant_bearer("embedded")) for _ in range(15)]
        )
        other = httpx.get(f"{rest.url}/api/v1/agents", headers=tenant_bearer("neighbour"))
    assert Counter(r.status_code for r in responses) == {200: BURST, 429: 15 - BURST}
    for response in responses:
        if response.status_code == 429:
            _assert_rate_limited(response)
    assert other.status_code == 200, other.text
