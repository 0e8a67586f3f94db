"""The cap on a tenant's unfinished jobs under real concurrency (issue 5).

Bursts of submits go over real HTTP (asyncio + httpx, all requests in flight at once) to the
REST shim in front of real gRPC servers. No worker runs, so every admitted job stays pending
and counts against the cap.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import func, select

from server.settings import Settings
from server.store.models import Job, JobStatus
from tests.e2e import scale_helpers
from tests.e2e.access_helpers import AGENT
from tests.e2e.harness import ServerThread, running_rest, running_server, settings_for
from tests.e2e.scale_helpers import TIMEOUT_S, Shot, burst, servers, set_limits, tenant_bearer

UNFINISHED = (JobStatus.PENDING, JobStatus.RUNNING)

# pytest finds the fixture among this module's attributes.
limited_settings = scale_helpers.limited_settings


# --- 6. the cap on unfinished jobs ---------------------------------------------------


def _unfinished(server: ServerThread, tenant: str) -> int:
    query = select(func.count()).where(Job.tenant_id == tenant, Job.status.in_(UNFINISHED))
    with server.engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def _agent(url: str, tenant: str) -> str:
    created = httpx.post(
        f"{url}/api/v1/agents", json=AGENT, headers=tenant_bearer(tenant), timeout=TIMEOUT_S
    )
    assert created.status_code == 201, created.text
    agent_id: str = created.json()["id"]
    return agent_id


def _submits(url: str, tenant: str, agent_id: str, count: int) -> list[httpx.Response]:
    shot = Shot(
        url, "POST", f"/api/v1/agents/{agent_id}/execute", tenant_bearer(tenant), {"prompt": "Hi"}
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
        limits = set_limits(url, "capped", max_unfinished_jobs=10)
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
        set_limits(second, "two-servers", max_unfinished_jobs=7)
        agent_id = _agent(first, "two-servers")
        path = f"/api/v1/agents/{agent_id}/execute"
        shots = [
            Shot(url, "POST", path, tenant_bearer("two-servers"), {"prompt": "Hi"})
            for _ in range(20)
            for url in (first, second)
        ]
        responses = burst(shots)
        _assert_capped(responses, cap=7)
        assert _unfinished(server, "two-servers") == 7


def test_a_cap_of_zero_refuses_every_submit(limited_settings: Settings) -> None:
    with servers(limited_settings, 1) as [(server, url)]:
        agent_id = _agent(url, "frozen")
        limits = set_limits(url, "frozen", max_unfinished_jobs=0)
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
        set_limits(url, "retrier", max_unfinished_jobs=1)
        agent_id = _agent(url, "retrier")
        headers = {**tenant_bearer("retrier"), "Idempotency-Key": "the-one-request"}
        shot = Shot(url, "POST", f"/api/v1/agents/{agent_id}/execute", headers, {"prompt": "Hi"})
        responses = burst([shot] * 20)
        statuses = Counter(r.status_code for r in responses)
        assert statuses == {202: 20}, (
            statuses,
            [r.text for r in responses if r.status_code != 202][:2],
        )
        assert len({r.json()["job_id"] for r in responses}) == 1
        assert _unfinished(server, "retrier") == 1
