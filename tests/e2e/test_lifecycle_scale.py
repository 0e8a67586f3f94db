"""Job lists at scale on PostgreSQL: paging 10,000 jobs over HTTP while new ones arrive.

The jobs are written straight into the database (10,000 submits through the API would
take most of a minute); the paging, the filters and the inserts that race it go through
the REST shim and the gRPC server like any client's.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, insert

from server.settings import Settings
from server.store.models import Job, JobStatus
from tests.e2e.harness import ServerThread, running_rest, running_server, token

JOBS = 10_000
OTHER_AGENT_JOBS = 300
OTHER_TENANT_JOBS = 200
# The first rows share one timestamp, more than a page of ties; the rest come in groups.
SAME_INSTANT = 350
GROUP = 7
PAGE = 100
FINISHED_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


def _row(
    *, tenant: str, agent_id: str, queued_at: datetime, status: JobStatus, prompt: str
) -> dict[str, Any]:
    """Every NOT NULL column of a finished job that no worker or sweeper will touch."""
    return {
        "id": str(uuid.uuid4()),
        "tenant_id": tenant,
        "agent_id": agent_id,
        "status": status.value,
        "prompt": prompt,
        "context_id": None,
        "enable_adversarial": False,
        "enable_self_correction": False,
        "max_debate_rounds": 3,
        "attempts": 1,
        "queued_at": queued_at,
        "started_at": queued_at,
        "completed_at": queued_at + timedelta(seconds=1),
        "next_run_at": queued_at,
        "enqueued_at": queued_at,
        "tokens_used": 0,
        "verified": False,
        "debate_rounds": 0,
        "depth": 0,
        "cancel_requested": False,
        "event_seq": 0,
    }


def _instants(base: datetime, count: int) -> list[datetime]:
    """Newest last: SAME_INSTANT identical ones, then groups of GROUP with microseconds."""
    instants = [base] * min(count, SAME_INSTANT)
    for i in range(count - len(instants)):
        step = 1 + i // GROUP
        instants.append(base + timedelta(seconds=step, microseconds=(step * 7919) % 1_000_000))
    return instants


def _insert(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as connection:
        for start in range(0, len(rows), 2000):
            connection.execute(insert(Job), rows[start : start + 2000])


@dataclass
class Existing:
    """The jobs in the database before the list is read."""

    agent_a: str
    agent_b: str
    alice: dict[str, dict[str, Any]] = field(default_factory=dict)
    others: set[str] = field(default_factory=set)


def _seed(engine: Engine, http: httpx.Client) -> Existing:
    agents = [http.post("/api/v1/agents", json={"name": n, "role": "You list."}) for n in "ab"]
    assert [a.status_code for a in agents] == [201, 201], [a.text for a in agents]
    existing = Existing(agent_a=agents[0].json()["id"], agent_b=agents[1].json()["id"])
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    rows = []
    for i, at in enumerate(_instants(base, JOBS)):
        status = FINISHED_STATUSES[i % 3]
        rows.append(
            _row(
                tenant="alice",
                agent_id=existing.agent_a,
                queued_at=at,
                status=status,
                prompt=f"a{i}",
            )
        )
    # Agent b's jobs and another tenant's interleave with agent a's, ties included.
    for i, at in enumerate(_instants(base, OTHER_AGENT_JOBS * GROUP)[::GROUP]):
        rows.append(
            _row(
                tenant="alice",
                agent_id=existing.agent_b,
                queued_at=at,
                status=JobStatus.COMPLETED,
                prompt=f"b{i}",
            )
        )
    existing.alice = {row["id"]: row for row in rows}
    for i, at in enumerate(_instants(base, OTHER_TENANT_JOBS)):
        row = _row(
            tenant="bob",
            agent_id=existing.agent_a,
            queued_at=at,
            status=JobStatus.COMPLETED,
            prompt=f"bob{i}",
        )
        rows.append(row)
        existing.others.add(row["id"])
    _insert(engine, rows)
    return existing


class Inserter(threading.Thread):
    """Keeps adding alice's jobs while the list is read: new ones through the API, and
    rows that tie with existing jobs straight into the database."""

    def __init__(self, url: str, engine: Engine, existing: Existing) -> None:
        super().__init__(daemon=True)
        self._url = url
        self._engine = engine
        self._existing = existing
        self._stopped = threading.Event()
        self.submitted: list[str] = []
        self.tied: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {token('alice')}"}
        instants = [row["queued_at"] for row in self._existing.alice.values()]
        with httpx.Client(base_url=self._url, headers=headers, timeout=10) as http:
            while not self._stopped.is_set():
                url = f"/api/v1/agents/{self._existing.agent_a}/execute"
                response = http.post(url, json={"prompt": f"new {len(self.submitted)}"})
                if response.status_code != 202:
                    self.errors.append(response.text)
                    return
                self.submitted.append(response.json()["job_id"])
                at = instants[(len(self.tied) * 997) % len(instants)]
                row = _row(
                    tenant="alice",
                    agent_id=self._existing.agent_a,
                    queued_at=at,
                    status=JobStatus.COMPLETED,
                    prompt="tied",
                )
                _insert(self._engine, [row])
                self.tied.append(row["id"])
                time.sleep(0.005)

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=10)


def _walk(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every job of a list, page by page, in the order the pages gave them."""
    jobs: list[dict[str, Any]] = []
    page_token = None
    while True:
        query = {"page_size": PAGE, **params}
        if page_token is not None:
            query["page_token"] = page_token
        response = http.get("/api/v1/jobs", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["meta"]["per_page"] == PAGE
        assert len(body["data"]) <= PAGE
        jobs.extend(body["data"])
        page_token = body["meta"]["next_page_token"]
        if page_token is None:
            return jobs
        assert len(body["data"]) == PAGE, "a page short of page_size before the last"


def _assert_newest_first(jobs: list[dict[str, Any]]) -> None:
    keys = [(datetime.fromisoformat(j["queued_at"]), j["job_id"]) for j in jobs]
    out_of_order = [i for i in range(1, len(keys)) if not keys[i] < keys[i - 1]]
    assert out_of_order == [], f"{len(out_of_order)} jobs out of order, first at {out_of_order[:1]}"


@dataclass
class Stack:
    server: ServerThread
    http: httpx.Client
    existing: Existing


@pytest.fixture
def stack(scaled_settings: Settings) -> Iterator[Stack]:
    """PostgreSQL with 10,000 jobs of alice's agent a, and a REST shim to list them."""
    with (
        running_server(scaled_settings, in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}", rest_timeout_s=30) as rest,
        httpx.Client(
            base_url=rest.url, headers={"Authorization": f"Bearer {token('alice')}"}, timeout=30
        ) as http,
    ):
        existing = _seed(server.engine, http)
        yield Stack(server, http, existing)


def test_paging_through_ten_thousand_jobs_while_new_ones_arrive_skips_and_repeats_none(
    stack: Stack,
) -> None:
    inserter = Inserter(str(stack.http.base_url), stack.server.engine, stack.existing)
    inserter.start()
    try:
        jobs = _walk(stack.http)
    finally:
        inserter.stop()
    assert inserter.errors == []
    assert len(inserter.submitted) > 10, "nothing was inserted while the list was read"
    seen = Counter(j["job_id"] for j in jobs)
    repeated = [i for i, n in seen.items() if n > 1]
    assert repeated == [], f"{len(repeated)} jobs on two pages"
    missing = set(stack.existing.alice) - set(seen)
    assert not missing, f"{len(missing)} existing jobs never listed"
    assert not set(seen) & stack.existing.others, "another tenant's jobs were listed"
    unexpected = set(seen) - set(stack.existing.alice) - set(inserter.tied)
    assert unexpected <= set(inserter.submitted)
    _assert_newest_first(jobs)


def test_a_filtered_list_pages_through_exactly_that_agents_or_that_statuss_jobs(
    stack: Stack,
) -> None:
    alice = stack.existing.alice
    for params in (
        {"agent_id": stack.existing.agent_b},
        {"status": "failed"},
        {"agent_id": stack.existing.agent_a, "status": "cancelled"},
    ):
        expected = {
            i
            for i, row in alice.items()
            if row["agent_id"] == params.get("agent_id", row["agent_id"])
            and row["status"] == params.get("status", row["status"])
        }
        jobs = _walk(stack.http, **params)
        assert Counter(j["job_id"] for j in jobs) == Counter(expected), params
        _assert_newest_first(jobs)


def test_a_page_token_the_list_did_not_issue_is_a_validation_error(stack: Stack) -> None:
    http = stack.http
    first = http.get("/api/v1/jobs", params={"page_size": PAGE}).json()
    assert first["meta"] == {"per_page": PAGE, "next_page_token": first["meta"]["next_page_token"]}
    issued = first["meta"]["next_page_token"]
    assert issued
    default = http.get("/api/v1/jobs").json()
    assert default["meta"]["per_page"] == 20 and len(default["data"]) == 20
    bob = {"Authorization": f"Bearer {token('bob')}"}
    for params, headers in (
        ({"page_token": "not-a-token"}, {}),
        ({"page_token": issued[:-2]}, {}),
        ({"page_token": issued, "status": "completed"}, {}),
        ({"page_token": issued, "agent_id": stack.existing.agent_a}, {}),
        ({"page_token": issued}, bob),
    ):
        response = http.get("/api/v1/jobs", params=params, headers=headers)
        assert response.status_code == 422, (params, response.text)
        body = response.json()
        assert body["error"] == {
            "code": "VALIDATION_ERROR",
            "message": "Invalid page_token",
            "status": 422,
        }
    for size in (0, 101):
        response = http.get("/api/v1/jobs", params={"page_size": size})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    unknown_status = http.get("/api/v1/jobs", params={"status": "sleeping"})
    assert unknown_status.status_code == 422, unknown_status.text
