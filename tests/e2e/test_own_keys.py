"""Self-service API keys end to end (README, Self-service API keys): created, listed and
revoked by their own tenant over REST and gRPC, with the same results on both; and the
limits of a key's own tier, on the embedded default and across servers on Redis.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pydantic import SecretStr

from agentq.v1 import job_service_pb2 as jobs_pb
from agentq.v1 import job_service_pb2_grpc as jobs_grpc
from server.settings import Settings
from tests.e2e import own_keys_helpers
from tests.e2e.access_helpers import ADMIN_TOKEN, INVALID_KEY, admin_header, create_key, parse_time
from tests.e2e.harness import ServerThread, token
from tests.e2e.own_keys_helpers import (
    TIERS,
    TIMEOUT_S,
    Grpc,
    Outcome,
    Rest,
    Transport,
    clear_of_a_minute_end,
    in_seconds,
)
from tests.e2e.rest_fields import API_KEY_FIELDS
from tests.e2e.scale_helpers import servers

# pytest finds the fixtures among this module's attributes.
served, server, http = own_keys_helpers.served, own_keys_helpers.server, own_keys_helpers.http


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened


@pytest.fixture(params=["rest", "grpc"])
def transport(
    request: pytest.FixtureRequest, http: httpx.Client, channel: grpc.Channel
) -> Transport:
    return Rest(http) if request.param == "rest" else Grpc(channel)


def _use(http: httpx.Client, key: str) -> httpx.Response:
    return http.get("/api/v1/jobs", headers={"X-API-Key": key})


def test_a_key_made_by_a_key_is_listed_without_its_secret_and_once_revoked_refused(
    http: httpx.Client, channel: grpc.Channel, transport: Transport
) -> None:
    tenant = f"lister-{transport.name}"
    manager = create_key(http, tenant, ["jobs:read", "keys:write"], name="manager")["key"]
    created = transport.create(
        manager,
        {"scopes": ["jobs:read"], "name": "  ci  ", "expires_at": in_seconds(3600), "tier": "free"},
    )
    assert created.status == 201, created
    made = created.body
    assert set(made) == API_KEY_FIELDS | {"key"}
    assert (made["tenant_id"], made["name"], made["role"]) == (tenant, "ci", "user")
    assert (made["scopes"], made["tier"]) == (["jobs:read"], "free")
    assert made["key"].startswith(made["prefix"]) and made["revoked_at"] is None
    lifetime = parse_time(made["expires_at"]) - parse_time(made["created_at"])
    assert 3590 <= lifetime.total_seconds() <= 3610
    unnamed = transport.create(manager, {"scopes": ["jobs:read"]}).body
    assert unnamed["name"] == unnamed["prefix"]
    assert _use(http, made["key"]).status_code == 200

    first = transport.list(manager, page_size=2)
    assert first.status == 200, first
    page = first.body
    assert page["meta"]["per_page"] == 2 and page["meta"]["next_page_token"]
    rest = transport.list(manager, page_token=page["meta"]["next_page_token"]).body
    listed = page["data"] + rest["data"]
    # Newest first, the manager itself included; metadata only, never a key.
    assert [k["id"] for k in listed][:2] == [unnamed["id"], made["id"]]
    assert {k["name"] for k in listed} == {"manager", "ci", unnamed["prefix"]}
    assert all(set(k) == API_KEY_FIELDS for k in listed)
    secrets = (manager, made["key"], unnamed["key"])
    assert not [s for s in secrets for k in listed if s in str(k) or s[8:] in str(k)]
    [entry] = [k for k in listed if k["id"] == made["id"]]
    assert entry["last_used_at"] is not None and entry["tier"] == "free"

    assert transport.delete(manager, made["id"]).status == 204
    refused = _use(http, made["key"])
    assert refused.status_code == 401 and refused.json()["error"]["message"] == INVALID_KEY
    metadata = (("x-api-key", made["key"]),)
    with pytest.raises(grpc.RpcError) as raised:
        jobs_grpc.JobServiceStub(channel).ListJobs(
            jobs_pb.ListJobsRequest(), metadata=metadata, timeout=TIMEOUT_S
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.details() == INVALID_KEY
    # Revoking it again changes nothing; the listing shows when it was revoked.
    assert transport.delete(manager, made["id"]).status == 204
    again = transport.list(manager).body["data"]
    assert [k["revoked_at"] is not None for k in again if k["id"] == made["id"]] == [True]


def test_an_operators_jwt_holds_every_scope_and_a_key_it_makes_may_manage_keys(
    http: httpx.Client, transport: Transport
) -> None:
    jwt = token("ops", tenant=f"jwt-{transport.name}")
    created = transport.create(jwt, {"scopes": ["keys:write", "agents:read"]})
    assert created.status == 201, created
    # Its scopes and role are the key's now: agents:read yes, jobs:read no.
    child = created.body["key"]
    assert transport.create(child, {"scopes": ["agents:read"]}).status == 201
    assert transport.create(child, {"scopes": ["jobs:read"]}).status == 403
    mine = {k["tenant_id"] for k in transport.list(jwt).body["data"]}
    assert mine == {f"jwt-{transport.name}"}


def test_an_expired_key_is_refused(http: httpx.Client) -> None:
    manager = create_key(http, "expiring", ["jobs:read", "keys:write"])["key"]
    short = Rest(http).create(manager, {"scopes": ["jobs:read"], "expires_at": in_seconds(2)})
    assert short.status == 201, short

    deadline = time.monotonic() + 30
    while _use(http, short.body["key"]).status_code == 200:
        assert time.monotonic() < deadline, "the key still works past its expiry"
        time.sleep(0.2)
    refused = _use(http, short.body["key"])
    assert refused.status_code == 401 and refused.json()["error"]["message"] == INVALID_KEY
    assert time.time() >= parse_time(short.body["expires_at"]).timestamp()


def _comparable(outcome: Outcome) -> tuple[int, str, str, Any]:
    """An outcome without what differs by nature between two calls: ids, keys, times."""
    body = outcome.body
    if isinstance(body, dict) and "data" in body:
        body = {**body, "data": [_comparable(Outcome(200, body=k))[3] for k in body["data"]]}
        body["meta"] = {**body["meta"], "next_page_token": bool(body["meta"]["next_page_token"])}
    elif isinstance(body, dict):
        varying = {"id", "key", "prefix", "created_at", "last_used_at", "expires_at", "tenant_id"}
        body = {k: v for k, v in body.items() if k not in varying}
        body["name"] = "<prefix>" if body["name"].startswith("agq_") else body["name"]
    return outcome.status, outcome.code, outcome.message, body


def test_the_same_calls_over_rest_and_grpc_give_the_same_results(
    http: httpx.Client, channel: grpc.Channel
) -> None:
    results = {}
    for transport in (Rest(http), Grpc(channel)):
        manager = create_key(http, f"parity-{transport.name}", ["jobs:read", "keys:write"])
        calls = [
            transport.create(manager["key"], {"scopes": ["jobs:read"], "name": "one"}),
            transport.create(manager["key"], {"scopes": ["jobs:read"], "tier": "free"}),
            transport.create(manager["key"], {"scopes": ["jobs:write"]}),
            transport.create(manager["key"], {"scopes": ["nope"]}),
            transport.list(manager["key"], page_size=2),
            transport.delete(manager["key"], manager["id"]),
            transport.list(manager["key"]),
        ]
        results[transport.name] = [_comparable(c) for c in calls]
    assert results["rest"] == results["grpc"]
    assert [r[0] for r in results["rest"]] == [201, 201, 403, 422, 200, 204, 401]


def test_a_key_of_its_own_tier_is_held_to_it_and_the_headers_report_that_limit(
    http: httpx.Client, channel: grpc.Channel
) -> None:
    manager = create_key(http, "tiered", ["jobs:read", "keys:write"])["key"]
    for_rest = Rest(http).create(manager, {"scopes": ["jobs:read"], "tier": "three-a-minute"})
    for_grpc = Rest(http).create(manager, {"scopes": ["jobs:read"], "tier": "three-a-minute"})
    clear_of_a_minute_end()

    responses = [_use(http, for_rest.body["key"]) for _ in range(4)]
    stub = jobs_grpc.JobServiceStub(channel)
    trailers = []
    for _ in range(3):
        _, call = stub.ListJobs.with_call(
            jobs_pb.ListJobsRequest(), metadata=(("x-api-key", for_grpc.body["key"]),)
        )
        trailers.append(dict(call.trailing_metadata() or ()))

    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    figures = [
        (r.headers["X-RateLimit-Limit"], r.headers["X-RateLimit-Remaining"]) for r in responses
    ]
    assert figures == [("3", "2"), ("3", "1"), ("3", "0"), ("3", "0")]
    minute_end = (int(time.time()) // 60 + 1) * 60
    assert {int(r.headers["X-RateLimit-Reset"]) for r in responses} == {minute_end}
    assert 1 <= int(responses[-1].headers["Retry-After"]) <= 60
    assert [(t["x-ratelimit-limit"], t["x-ratelimit-remaining"]) for t in trailers] == [
        ("3", "2"),
        ("3", "1"),
        ("3", "0"),
    ]
    with pytest.raises(grpc.RpcError) as raised:
        stub.ListJobs(jobs_pb.ListJobsRequest(), metadata=(("x-api-key", for_grpc.body["key"]),))
    status = rpc_status.from_call(raised.value)  # type: ignore[arg-type]
    assert status is not None and raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    [quota] = [d for d in status.details if d.Is(error_details_pb2.QuotaFailure.DESCRIPTOR)]
    failure = error_details_pb2.QuotaFailure()
    quota.Unpack(failure)
    [violation] = failure.violations
    assert violation.subject == f"apikey:{for_grpc.body['id']}"
    assert violation.description == "3 requests per minute"
    # The tenant's other callers are not held back by the key's tier.
    assert _use(http, manager).status_code == 200


def test_across_servers_on_redis_a_keys_minute_is_shared(scaled_settings: Settings) -> None:
    settings = scaled_settings.model_copy(
        update={"admin_token": SecretStr(ADMIN_TOKEN), "rate_tiers": TIERS}
    )
    with servers(settings, 2) as started:
        urls = [url for _, url in started]
        with httpx.Client(base_url=urls[0], timeout=TIMEOUT_S) as first:
            manager = create_key(first, "shared", ["jobs:read", "keys:write"])["key"]
            made = Rest(first).create(manager, {"scopes": ["jobs:read"], "tier": "three-a-minute"})
        clear_of_a_minute_end()
        statuses = [
            httpx.get(
                f"{urls[i % 2]}/api/v1/jobs",
                headers={"X-API-Key": made.body["key"]},
                timeout=TIMEOUT_S,
            ).status_code
            for i in range(6)
        ]
    assert statuses == [200, 200, 200, 429, 429, 429]


def test_the_admin_api_gives_a_key_a_tier_and_shows_a_tiers_windows(http: httpx.Client) -> None:
    made = create_key(http, "planned", ["jobs:read"], tier="three-a-minute")
    assert made["tier"] == "three-a-minute"
    unknown = http.post(
        "/admin/api-keys",
        json={"tenant_id": "planned", "name": "x", "scopes": ["jobs:read"], "tier": "gold"},
        headers=admin_header(),
    )
    assert unknown.status_code == 422
    assert unknown.json()["error"]["message"] == f"Invalid tier: 'gold'. Valid: {sorted(TIERS)}"

    limits = http.put(
        "/admin/tenants/planned/limits", json={"tier": "starter"}, headers=admin_header()
    )

    assert limits.status_code == 200, limits.text
    body = limits.json()
    assert (body["tier"], body["per_minute"], body["per_day"]) == ("starter", 60, 10_000)
    assert (body["rate_per_second"], body["burst"]) == (1.0, 60)
    plain = http.get("/admin/tenants/other/limits", headers=admin_header()).json()
    assert (plain["per_minute"], plain["per_day"]) == (None, None)
