"""The vex-api walkthrough over real HTTP: health, a CLI-minted token, create, execute, poll."""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from server.settings import Settings
from tests.e2e.cli_helpers import clean_env
from tests.e2e.harness import SECRET, RestThread, WorkerProcess, running_rest, running_server
from tests.e2e.rest_fields import (
    ACK_FIELDS,
    AGENT_FIELDS,
    HEALTH_FIELDS,
    JOB_FIELDS,
    RESULT_FIELDS,
)
from tests.e2e.rest_helpers import CANONICAL_UUID
from tests.processes import run_agentq

POLL_TIMEOUT_S = 30
RFC3339_Z = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
HEX64 = re.compile(r"[0-9a-f]{64}")
# What a vex-api client does with the acknowledgement: find the UUID in `response`.
UUID_IN_TEXT = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")

# The request bodies of the seed walkthrough, with padding to show trimming.
SEED_AGENT = {
    "name": "  integration-agent  ",
    "role": "  You are a concise research assistant.  ",
    "max_depth": 3,
    "spawn_shadow": False,
}
SEED_EXECUTION = {
    "prompt": "Summarize the benefits of queued agent execution in two sentences.",
    "context_id": None,
    "enable_adversarial": False,
    "enable_self_correction": False,
    "max_debate_rounds": 3,
}


def _timestamp(value: Any) -> datetime:
    """An RFC 3339 UTC timestamp with Z, parsed."""
    assert isinstance(value, str) and RFC3339_Z.fullmatch(value), value
    return datetime.fromisoformat(value)


def _mint_token_with_the_cli(tmp_path: Path) -> str:
    """`agentq token` as an integrator runs it: only VEX_JWT_SECRET set."""
    result = run_agentq(
        *("token", "--sub", "integrator", "--role", "user"),
        cwd=tmp_path,
        env=clean_env(VEX_JWT_SECRET=SECRET),
    )
    assert result.returncode == 0, result.stderr
    minted = result.stdout.strip()
    assert minted.count(".") == 2, result.stdout
    return minted


def _context_hash(*, agent_id: str, role: str, prompt: str, response: str) -> str:
    """The proof hash of docs/contract.md §3, recomputed as any client holding the job can."""
    document = {"agent_id": agent_id, "prompt": prompt, "response": response, "role": role}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _poll_until_finished(http: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while True:
        response = http.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        assert job["status"] in ("pending", "running"), job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {POLL_TIMEOUT_S}s")
        time.sleep(0.05)


def _walk_the_seed(base_url: str, bearer: str, *, db_type: str) -> None:
    """Steps 1-5 of the seed document, with every shape checked."""
    with httpx.Client(base_url=base_url, timeout=10) as http:
        # Step 1: the service is up.
        health = http.get("/health")
        assert health.status_code == 200, health.text
        assert set(health.json()) == HEALTH_FIELDS
        assert health.json()["status"] == "healthy"
        assert health.json()["db_type"] == db_type
        assert isinstance(health.json()["version"], str) and health.json()["version"]
        _timestamp(health.json()["timestamp"])

        # Step 2 happened in the caller: `bearer` was minted from VEX_JWT_SECRET.
        http.headers["Authorization"] = f"Bearer {bearer}"

        # Step 3: create an agent.
        created = http.post("/api/v1/agents", json=SEED_AGENT)
        assert created.status_code == 201, created.text
        agent = created.json()
        assert set(agent) == AGENT_FIELDS
        assert CANONICAL_UUID.fullmatch(agent["id"])
        assert agent["name"] == "integration-agent"
        assert agent["role"] == "You are a concise research assistant."
        assert agent["max_depth"] == 3
        assert agent["spawn_shadow"] is False
        assert agent["generation"] == 0
        assert agent["fitness"] == 0.0
        _timestamp(agent["created_at"])

        # Step 4: queue an execution.
        started = time.monotonic()
        acked = http.post(f"/api/v1/agents/{agent['id']}/execute", json=SEED_EXECUTION)
        assert acked.status_code == 202, acked.text
        ack = acked.json()
        assert set(ack) == ACK_FIELDS
        found = UUID_IN_TEXT.search(ack["response"])
        assert found is not None, ack["response"]
        job_id = found.group(0)
        assert job_id == ack["job_id"]
        assert CANONICAL_UUID.fullmatch(job_id)
        assert ack == {
            "agent_id": agent["id"],
            "job_id": job_id,
            "status": "pending",
            "response": f"Job queued: {job_id}",
            "verified": False,
            "confidence": 1.0,
            "context_hash": "pending",
            "merkle_root": None,
            "latency_ms": ack["latency_ms"],
        }
        assert type(ack["latency_ms"]) is int
        assert 0 <= ack["latency_ms"] <= (time.monotonic() - started) * 1000 + 1

        # An acknowledged job can be read back at once.
        right_after = http.get(f"/api/v1/jobs/{job_id}")
        assert right_after.status_code == 200, right_after.text
        assert right_after.json()["status"] in ("pending", "running", "completed")

        # Step 5: poll the job.
        job = _poll_until_finished(http, job_id)
    _assert_completed_job(job, agent=agent, job_id=job_id)


def _assert_completed_job(job: dict[str, Any], *, agent: dict[str, Any], job_id: str) -> None:
    assert set(job) == JOB_FIELDS
    assert job["status"] == "completed", job
    assert job["job_id"] == job_id
    assert job["agent_id"] == agent["id"]
    assert job["error"] is None
    assert job["attempts"] == 1
    queued = _timestamp(job["queued_at"])
    assert queued <= _timestamp(job["started_at"]) <= _timestamp(job["completed_at"])

    result = job["result"]
    assert set(result) == RESULT_FIELDS
    assert result["job_id"] == job_id
    assert result["agent_id"] == agent["id"]
    assert result["success"] is True
    assert isinstance(result["response"], str) and result["response"]
    assert result["error"] is None
    assert result["confidence"] is None
    assert result["verified"] is False
    assert result["prompt"] == SEED_EXECUTION["prompt"]
    assert type(result["tokens_used"]) is int and result["tokens_used"] > 0
    _timestamp(result["completed_at"])
    assert HEX64.fullmatch(result["context_hash"])
    assert result["merkle_root"] == result["context_hash"]
    assert result["context_hash"] == _context_hash(
        agent_id=agent["id"],
        role=agent["role"],
        prompt=result["prompt"],
        response=result["response"],
    )


def test_the_seed_walkthrough_completes_on_the_embedded_default(
    rest: RestThread, tmp_path: Path
) -> None:
    _walk_the_seed(rest.url, _mint_token_with_the_cli(tmp_path), db_type="sqlite")


def test_the_seed_walkthrough_completes_on_postgres_and_redis_with_a_separate_worker(
    scaled_settings: Settings, tmp_path: Path
) -> None:
    bearer = _mint_token_with_the_cli(tmp_path)
    with running_server(scaled_settings, in_process_workers=False) as server:
        worker = WorkerProcess(scaled_settings, concurrency=2)
        try:
            with running_rest(f"127.0.0.1:{server.port}") as shim:
                _walk_the_seed(shim.url, bearer, db_type="postgres")
        finally:
            worker.stop()
        # Only the worker could run the job (the server has none); it did so without
        # an error. (It logs each attempt at DEBUG only: a line per job costs too much.)
        assert "Traceback" not in worker.output and " ERROR " not in worker.output
