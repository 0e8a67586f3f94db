"""Retries, failures, time limits and lost workers, with real servers, workers and HTTP."""

from __future__ import annotations

import os
import time
from pathlib import Path

from agentq.v1 import job_pb2
from server.settings import Settings
from server.store.models import JobStatus
from tests.e2e.fake_llm import Reply, fake_llm
from tests.e2e.harness import Client, WorkerProcess, running_server, settings_for, token
from tests.e2e.stored import stored_jobs


def _embedded_with(tmp_path: Path, base_url: str, **overrides: object) -> Settings:
    return settings_for(
        database_url=f"sqlite:///{tmp_path / 'agentq.db'}",
        provider="openai",
        openai_base_url=base_url,
        openai_api_key="sk-test",
        openai_model="test-model",
        **overrides,
    )


def _run_one(client: Client, prompt: str = "Summarise the news") -> job_pb2.Job:
    agent = client.create_agent(role="You are terse.")
    job: job_pb2.Job = client.wait_finished(client.execute(agent.id, prompt=prompt).job_id)
    return job


def test_retryable_provider_errors_back_off_and_then_succeed(tmp_path: Path) -> None:
    replies = [
        Reply.error(500, "overloaded"),
        Reply.error(429, "slow down"),
        Reply.answer("Done.", 7),
    ]
    with (
        fake_llm(replies) as (llm, url),
        running_server(_embedded_with(tmp_path, url), in_process_workers=True) as server,
        server.client(token()) as client,
    ):
        job = _run_one(client)
    assert job.status == job_pb2.JOB_STATUS_COMPLETED
    assert job.attempts == 3
    assert job.result.response == "Done."
    assert job.result.tokens_used == 7
    assert [r["messages"][0] for r in llm.requests] == [
        {"role": "system", "content": "You are terse."}
    ] * 3
    assert llm.requests[0]["model"] == "test-model"


def test_a_job_that_keeps_failing_ends_failed_after_max_attempts(tmp_path: Path) -> None:
    with (
        fake_llm([Reply.error(503, "down for maintenance")]) as (llm, url),
        running_server(
            _embedded_with(tmp_path, url, max_attempts=3), in_process_workers=True
        ) as server,
        server.client(token()) as client,
    ):
        job = _run_one(client)
    message = "Provider returned HTTP 503: down for maintenance"
    assert job.status == job_pb2.JOB_STATUS_FAILED
    assert job.attempts == 3
    assert len(llm.requests) == 3
    assert job.error == message
    assert not job.result.success
    assert job.result.error == message
    assert job.result.response == ""


def test_a_permanent_provider_error_fails_at_once(tmp_path: Path) -> None:
    with (
        fake_llm([Reply.error(400, "bad model")]) as (_, url),
        running_server(_embedded_with(tmp_path, url), in_process_workers=True) as server,
        server.client(token()) as client,
    ):
        job = _run_one(client)
    assert job.status == job_pb2.JOB_STATUS_FAILED
    assert job.attempts == 1
    assert job.error == "Provider returned HTTP 400: bad model"


def test_a_run_past_the_time_limit_is_a_failed_attempt(tmp_path: Path) -> None:
    replies = [Reply.answer("too late", 1, delay_s=2.0), Reply.answer("in time", 2)]
    with (
        fake_llm(replies) as (_, url),
        running_server(
            _embedded_with(tmp_path, url, job_time_limit_s=0.5), in_process_workers=True
        ) as server,
        server.client(token()) as client,
    ):
        job = _run_one(client)
    assert job.status == job_pb2.JOB_STATUS_COMPLETED
    assert job.attempts == 2
    assert job.result.response == "in time"


def test_a_job_whose_worker_is_killed_mid_run_runs_again_as_a_new_attempt(
    scaled_settings: Settings,
) -> None:
    settings = scaled_settings.model_copy(
        update={"builtin_latency_ms": 3000, "job_time_limit_s": 5, "lease_grace_s": 0.5}
    )
    with (
        running_server(settings, in_process_workers=False) as server,
        server.client(token()) as client,
    ):
        agent = client.create_agent()
        first = WorkerProcess(settings, concurrency=1)
        job_id = client.execute(agent.id).job_id
        deadline = time.monotonic() + 20
        while client.get_job(job_id).status != job_pb2.JOB_STATUS_RUNNING:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        first.kill()
        second = WorkerProcess(settings.model_copy(update={"builtin_latency_ms": 0}), concurrency=1)
        try:
            job = client.wait_finished(job_id, timeout_s=30)
        finally:
            second.stop()
    assert job.status == job_pb2.JOB_STATUS_COMPLETED
    assert job.attempts == 2


def test_every_job_completes_exactly_once_when_a_worker_is_killed(
    scaled_settings: Settings,
) -> None:
    total = int(os.environ.get("AGENTQ_TEST_SOAK_JOBS", "200"))
    concurrency = 4
    settings = scaled_settings.model_copy(
        update={
            "builtin_latency_ms": 20,
            "job_time_limit_s": 2,
            "lease_grace_s": 1,
            "requeue_after_s": 3,
            "broker_heartbeat_timeout_s": 5,
        }
    )
    with (
        running_server(settings, in_process_workers=False) as server,
        server.client(token()) as client,
    ):
        agent = client.create_agent()
        doomed = WorkerProcess(settings, concurrency=concurrency)
        survivor = WorkerProcess(settings, concurrency=concurrency)
        try:
            ids = [client.execute(agent.id, prompt=f"task {i}").job_id for i in range(total)]
            deadline = time.monotonic() + 60
            while True:
                rows = stored_jobs(server.engine, ids)
                done = {i: r for i, r in rows.items() if r.status == JobStatus.COMPLETED}
                if len(done) >= total // 4:
                    break
                assert time.monotonic() < deadline, "jobs are not being run"
                time.sleep(0.05)
            doomed.kill()
            before_kill = {i: (r.completed_at, r.attempts, r.response) for i, r in done.items()}
            deadline = time.monotonic() + 120
            while True:
                rows = stored_jobs(server.engine, ids)
                if all(r.status == JobStatus.COMPLETED for r in rows.values()):
                    break
                assert time.monotonic() < deadline, "not every job completed"
                time.sleep(0.2)
        finally:
            survivor.stop()
            doomed.stop()
    assert len(rows) == total
    # A job that had completed was never started again.
    assert {
        i: (rows[i].completed_at, rows[i].attempts, rows[i].response) for i in before_kill
    } == before_kill
    # Only the runs cut off by the kill (at most one per slot) were run again.
    attempts = sorted(r.attempts for r in rows.values())
    assert attempts[-1] <= 2
    assert sum(1 for a in attempts if a == 2) <= concurrency
