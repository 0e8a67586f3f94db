"""The worker logs one line per attempt's outcome on `agentq.jobs`, with its fields."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import update

from server.providers.base import Completion, ProviderError
from server.store.records import JobRecord
from server.store.tables import jobs
from server.worker.policy import RetryPolicy
from server.worker.runner import CancelSignal
from tests.fakes.provider import ScriptedProvider
from tests.world import ANSWER, World

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


async def _run(world: World, *outcomes: Any, max_attempts: int = 3) -> JobRecord:
    job = await world.add_job(await world.add_agent())
    policy = RetryPolicy(max_attempts=max_attempts, backoff_s=0)
    runner = world.runner(ScriptedProvider(*outcomes), policy=policy)
    for _ in range(max_attempts):
        now = await world.job(job.id)
        assert now is not None
        if now.status not in ("pending", "running"):
            break
        await world.run_job(runner, job.id)
    return job


@pytest.fixture(autouse=True)
def _info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentq.jobs")


async def test_a_completed_job_logs_one_line_with_its_id_outcome_attempts_and_duration(
    caplog: pytest.LogCaptureFixture, world: World
) -> None:
    job = await _run(world, ANSWER)

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


async def test_each_retried_attempt_and_the_final_failure_log_a_line_with_the_error(
    caplog: pytest.LogCaptureFixture, world: World
) -> None:
    job = await _run(world, UNAVAILABLE, UNAVAILABLE, max_attempts=2)

    lines = _job_lines(caplog)
    assert [(x["job_id"], x["outcome"], x["attempts"], x["error"]) for x in lines] == [
        (job.id, "retrying", 1, "Provider returned HTTP 503"),
        (job.id, "failed", 2, "Provider returned HTTP 503"),
    ]
    assert lines[1]["message"].endswith("ms error=Provider returned HTTP 503")


async def test_a_cancelled_attempt_logs_the_cancelled_outcome(
    caplog: pytest.LogCaptureFixture, world: World
) -> None:
    job = await world.add_job(await world.add_agent())
    signal = CancelSignal()

    async def cancelled_midway() -> Completion:
        cancel = update(jobs).where(jobs.c.id == job.id).values(cancel_requested=True)
        await world.store.db.run(cancel)
        signal.cancel()  # the engine's cancel check found the request
        return ANSWER

    await world.run_job(world.runner(ScriptedProvider(cancelled_midway)), job.id, signal)

    assert [(x["job_id"], x["outcome"], x["attempts"]) for x in _job_lines(caplog)] == [
        (job.id, "cancelled", 1)
    ]


async def test_the_job_lines_are_silenced_by_raising_their_loggers_level(
    caplog: pytest.LogCaptureFixture, world: World
) -> None:
    caplog.set_level(logging.WARNING, logger="agentq.jobs")

    await _run(world, ANSWER)

    assert _job_lines(caplog) == []
