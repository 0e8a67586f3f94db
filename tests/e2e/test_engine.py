"""The execution engine under slow provider calls: PostgreSQL, Redis, `agentq worker`,
and a fake OpenAI-compatible provider in its own process that counts what it sees."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from agentq.v1 import job_service_pb2 as jobs_pb
from agentq.v1 import job_service_pb2_grpc as jobs_grpc
from server.settings import Settings
from server.store.models import JobStatus
from server.store.records import JobRecord
from tests.e2e.harness import (
    Client,
    ServerThread,
    WorkerProcess,
    fake_llm_process,
    running_server,
    token,
)
from tests.e2e.stored import stored_events, stored_jobs


def _provider(settings: Settings, base_url: str, **updates: Any) -> Settings:
    return settings.model_copy(
        update={"provider": "openai", "openai_base_url": base_url, **updates}
    )


def _wait_all_finished(engine: Engine, ids: list[str], *, timeout_s: float) -> dict[str, JobRecord]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = stored_jobs(engine, ids)
        if all(JobStatus(row.status).finished for row in rows.values()):
            return rows
        unfinished = sum(1 for row in rows.values() if not JobStatus(row.status).finished)
        assert time.monotonic() < deadline, f"{unfinished} jobs unfinished after {timeout_s}s"
        time.sleep(0.1)


def _known(moment: datetime | None) -> datetime:
    """A time a finished job must have."""
    assert moment is not None
    return moment


@contextmanager
def _queued(
    settings: Settings, count: int, prompt: str = "task"
) -> Iterator[tuple[ServerThread, Client, list[str]]]:
    """A server (no workers) with `count` executions queued, each with its own prompt."""
    with (
        running_server(settings, in_process_workers=False) as server,
        server.client(token()) as client,
    ):
        agent = client.create_agent()
        ids = [client.execute(agent.id, prompt=f"{prompt} {i}").job_id for i in range(count)]
        yield server, client, ids


def test_300_slow_calls_are_in_flight_at_once_and_each_prompt_is_sent_once(
    scaled_settings: Settings,
) -> None:
    latency_s = 2.0
    with fake_llm_process(delay_s=latency_s) as fake:
        settings = _provider(scaled_settings, fake.base_url, worker_concurrency=300)
        with _queued(settings, 300) as (server, _, ids):
            worker = WorkerProcess(settings)
            try:
                rows = _wait_all_finished(server.engine, ids, timeout_s=60)
            finally:
                worker.stop()
        stats = fake.stats()
    assert {row.status for row in rows.values()} == {JobStatus.COMPLETED}
    assert {row.attempts for row in rows.values()} == {1}
    assert stats["calls"] == 300
    assert set(stats["calls_per_prompt"].values()) == {1}
    # Not capped by threads: every slot held a call at once.
    assert stats["peak_in_flight"] >= 270
    started = min(_known(row.started_at) for row in rows.values())
    finished = max(_known(row.completed_at) for row in rows.values())
    # Generous: one latency for the calls, one more for claims, writes and a busy machine.
    assert (finished - started).total_seconds() < 2 * latency_s + 4


def test_the_time_limit_cuts_each_attempt_from_its_own_start(scaled_settings: Settings) -> None:
    with fake_llm_process(delay_s=0.2) as fake:
        settings = _provider(
            scaled_settings,
            fake.base_url,
            job_time_limit_s=3,
            max_attempts=2,
            retry_backoff_s=0.1,
            worker_concurrency=50,
        )
        with _queued(settings, 20, prompt="quick") as (server, client, quick):
            agent_id = stored_jobs(server.engine, quick[:1])[quick[0]].agent_id
            slow = client.execute(agent_id, prompt="[delay=5] slow").job_id
            worker = WorkerProcess(settings)
            try:
                rows = _wait_all_finished(server.engine, [*quick, slow], timeout_s=40)
            finally:
                worker.stop()
            events = stored_events(server.engine, slow)
        stats = fake.stats()
    assert all(rows[job_id].status == JobStatus.COMPLETED for job_id in quick)
    assert {rows[job_id].attempts for job_id in quick} == {1}
    job = rows[slow]
    assert (job.status, job.attempts) == (JobStatus.FAILED, 2)
    assert job.error == "Job exceeded its time limit of 3s"
    kinds = [event.type for event in events]
    assert kinds == ["queued", "started", "retrying", "started", "failed"]
    cuts = [
        (events[2].created_at - events[1].created_at).total_seconds(),
        (events[4].created_at - events[3].created_at).total_seconds(),
    ]
    assert all(2.5 <= cut <= 3.5 for cut in cuts), cuts
    assert events[2].error == "Job exceeded its time limit of 3s"
    # Each cut call's connection was closed, not left to run on.
    assert stats["disconnects"] == 2


def test_cancelling_100_of_500_running_jobs_stops_each_within_a_second(
    scaled_settings: Settings,
) -> None:
    with fake_llm_process(delay_s=8) as fake:
        settings = _provider(scaled_settings, fake.base_url, worker_concurrency=500)
        with _queued(settings, 500) as (server, client, ids):
            worker = WorkerProcess(settings)
            try:
                deadline = time.monotonic() + 30
                while fake.stats()["in_flight"] < 500:
                    assert time.monotonic() < deadline, f"in flight: {fake.stats()['in_flight']}"
                    time.sleep(0.1)
                stub = jobs_grpc.JobServiceStub(client.channel)
                asked: dict[str, datetime] = {}
                for job_id in ids[:100]:
                    asked[job_id] = datetime.now(UTC)
                    stub.CancelJob(
                        jobs_pb.CancelJobRequest(job_id=job_id),
                        metadata=client.metadata,
                        timeout=10,
                    )
                rows = _wait_all_finished(server.engine, ids, timeout_s=60)
                cancelled_at = {
                    job_id: stored_events(server.engine, job_id)[-1] for job_id in asked
                }
            finally:
                worker.stop()
        stats = fake.stats()
    assert all(rows[job_id].status == JobStatus.CANCELLED for job_id in asked)
    assert all(rows[job_id].status == JobStatus.COMPLETED for job_id in ids[100:])
    assert {event.type for event in cancelled_at.values()} == {"cancelled"}
    late = {
        job_id: (event.created_at - asked[job_id]).total_seconds()
        for job_id, event in cancelled_at.items()
    }
    assert max(late.values()) < 1.0, sorted(late.values())[-5:]
    # Each cancelled call's connection was closed at once.
    assert stats["disconnects"] == 100
    assert stats["calls"] == 500


def test_a_200_piece_answer_costs_a_few_token_events(scaled_settings: Settings) -> None:
    with fake_llm_process(delay_s=0.5, chunks=200) as fake:
        settings = _provider(scaled_settings, fake.base_url, token_event_interval_ms=100)
        with _queued(settings, 10, prompt="long answer") as (server, _, ids):
            worker = WorkerProcess(settings)
            try:
                rows = _wait_all_finished(server.engine, ids, timeout_s=30)
            finally:
                worker.stop()
            events = {job_id: stored_events(server.engine, job_id) for job_id in ids}
    for job_id in ids:
        tokens = [event for event in events[job_id] if event.type == "token"]
        # The pieces come back to back: at most one event per interval, plus the last.
        assert 1 <= len(tokens) <= 3, len(tokens)
        deltas = [event.delta for event in tokens if event.delta is not None]
        assert len(deltas) == len(tokens)
        assert "".join(deltas) == rows[job_id].response
        response = rows[job_id].response
        assert response is not None
        assert response.startswith("Echo: long answer")


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as listing:
            found.update(int(child) for child in listing.read().split())
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_children_of_a_sigkilled_worker_parent_exit_within_5_seconds(
    scaled_settings: Settings,
) -> None:
    with fake_llm_process(delay_s=30) as fake:
        settings = _provider(scaled_settings, fake.base_url)
        with _queued(settings, 20):
            worker = WorkerProcess(settings, processes=2)
            try:
                deadline = time.monotonic() + 30
                while (
                    worker.output.count("agentq worker ready") < 2 or fake.stats()["in_flight"] < 20
                ):
                    assert time.monotonic() < deadline, worker.output
                    time.sleep(0.1)
                children = _children(worker.process.pid)
                assert children, "the worker started no child process"
                worker.process.send_signal(signal.SIGKILL)
                worker.process.wait(timeout=10)
                deadline = time.monotonic() + 5
                while any(_alive(child) for child in children):
                    assert time.monotonic() < deadline, "a child outlived its parent by 5s"
                    time.sleep(0.1)
            finally:
                worker.stop()
                for child in children:
                    if _alive(child):
                        os.kill(child, signal.SIGKILL)
