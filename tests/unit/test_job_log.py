"""The worker logs one line per attempt's outcome on `agentq.jobs`, with its fields."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from server.models import Job
from server.providers.base import Completion, ProviderError
from server.worker.policy import RetryPolicy
from server.worker.runner import CancelSignal
from tests.unit.fakes import (
    FakeClock,
    FakeQueue,
    FakeStore,
    ScriptedProvider,
    attempt_runner,
    make_agent,
    make_job,
    run_job,
)

ANSWER = Completion(text="Revenue grew 12% on strong exports.", tokens_used=42)
UNAVAILABLE = ProviderError("Provider returned HTTP 503", retryable=True)


def _job_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        {
            key: getattr(record, key)
            for key in ("job_id", "outcome", "attempts", "duration_ms", "error")
        }
        | {"level": record.levelname, "message": record.getMessage()}
        for record in caplog.records
        if record.name == "agentq.jobs"
    ]


def _run(*outcomes: Any, max_attempts: int = 3) -> Job:
    store, clock, queue = FakeStore(), FakeClock(), FakeQueue()
    agent = make_agent()
    job = make_job(agent, at=clock.now)
    store.put(agent, job)
    policy = RetryPolicy(max_attempts=max_attempts, backoff_s=0)
    runner = attempt_runner(store, ScriptedProvider(*outcomes), queue, policy, clock=clock)
    for _ in range(max_attempts):
        if store.jobs[job.id].status not in ("pending", "running"):
            break
        run_job(runner, job.id)
    return job


@pytest.fixture(autouse=True)
def _info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentq.jobs")


def test_a_completed_job_logs_one_line_with_its_id_outcome_attempts_and_duration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = _run(ANSWER)

    [line] = _job_lines(caplog)
    assert line["job_id"] == job.id
    assert (line["outcome"], line["attempts"], line["error"], line["level"]) == (
        "completed",
        1,
        None,
        "INFO",
    )
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["message"] == f"job {job.id} completed attempts=1 {line['duration_ms']:.1f}ms"


def test_each_retried_attempt_and_the_final_failure_log_a_line_with_the_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = _run(UNAVAILABLE, UNAVAILABLE, max_attempts=2)

    lines = _job_lines(caplog)
    assert [(x["job_id"], x["outcome"], x["attempts"], x["error"]) for x in lines] == [
        (job.id, "retrying", 1, "Provider returned HTTP 503"),
        (job.id, "failed", 2, "Provider returned HTTP 503"),
    ]
    assert lines[1]["message"].endswith("ms error=Provider returned HTTP 503")


def test_a_cancelled_attempt_logs_the_cancelled_outcome(caplog: pytest.LogCaptureFixture) -> None:
    store, clock, signal = FakeStore(), FakeClock(), CancelSignal()
    agent = make_agent()
    job = make_job(agent, at=clock.now)
    store.put(agent, job)

    def cancelled_midway() -> Completion:
        store.jobs[job.id].cancel_requested = True
        signal.cancel()  # the engine's cancel check found the request
        return ANSWER

    provider = ScriptedProvider(cancelled_midway)
    run_job(
        attempt_runner(store, provider, FakeQueue(), RetryPolicy(), clock=clock), job.id, signal
    )

    assert [(x["job_id"], x["outcome"], x["attempts"]) for x in _job_lines(caplog)] == [
        (job.id, "cancelled", 1)
    ]


def test_the_job_lines_are_silenced_by_raising_their_loggers_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agentq.jobs")

    _run(ANSWER)

    assert _job_lines(caplog) == []
