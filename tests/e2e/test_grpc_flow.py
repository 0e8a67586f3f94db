"""The create -> execute -> poll flow over real gRPC, embedded and on PostgreSQL + Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agentq.v1 import job_pb2
from server.settings import Settings
from server.worker.hashes import context_hash
from tests.e2e.harness import ServerThread, WorkerProcess, running_server, token


def _assert_completed_flow(server: ServerThread) -> None:
    with server.client(token("alice")) as client:
        agent = client.create_agent(name="  research bot ", role="  You answer briefly.  ")
        assert agent.name == "research bot"
        assert agent.role == "You answer briefly."
        assert agent.max_depth == 3

        ack = client.execute(agent.id, prompt="  What is the capital of France?  ")
        assert ack.status == job_pb2.JOB_STATUS_PENDING
        assert ack.response == f"Job queued: {ack.job_id}"
        assert ack.context_hash == "pending"
        assert not ack.HasField("merkle_root")

        job = client.wait_finished(ack.job_id)
        assert job.status == job_pb2.JOB_STATUS_COMPLETED, job
        assert job.attempts == 1
        assert not job.HasField("error")
        result = job.result
        assert result.success
        assert result.job_id == ack.job_id
        assert result.prompt == "What is the capital of France?"
        assert result.tokens_used > 0
        expected = context_hash(
            agent_id=agent.id, role=agent.role, prompt=result.prompt, response=result.response
        )
        assert result.context_hash == expected
        assert result.merkle_root == expected
        queued = job.queued_at.ToDatetime(UTC)
        assert queued <= job.started_at.ToDatetime(UTC) <= job.completed_at.ToDatetime(UTC)
        assert abs(datetime.now(UTC) - queued) < timedelta(minutes=1)


def test_an_execution_completes_on_the_embedded_default(embedded: ServerThread) -> None:
    _assert_completed_flow(embedded)


def test_an_execution_completes_on_postgres_and_redis_with_a_separate_worker(
    scaled_settings: Settings,
) -> None:
    with running_server(scaled_settings, in_process_workers=False) as server:
        worker = WorkerProcess(scaled_settings, concurrency=2)
        try:
            _assert_completed_flow(server)
        finally:
            worker.stop()
        # Only the worker could run the job (the server has none); it did so without
        # an error. (It logs each attempt at DEBUG only: a line per job costs too much.)
        assert "Traceback" not in worker.output and " ERROR " not in worker.output


def test_a_job_stays_pending_until_a_worker_runs_it(
    scaled_settings: Settings,
) -> None:
    with (
        running_server(scaled_settings, in_process_workers=False) as server,
        server.client(token()) as client,
    ):
        agent = client.create_agent()
        ack = client.execute(agent.id)
        assert client.get_job(ack.job_id).status == job_pb2.JOB_STATUS_PENDING
        worker = WorkerProcess(scaled_settings, concurrency=1)
        try:
            assert client.wait_finished(ack.job_id).status == job_pb2.JOB_STATUS_COMPLETED
        finally:
            worker.stop()
