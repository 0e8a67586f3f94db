"""Dependencies going away: a clear UNAVAILABLE, and no acknowledged job ever lost."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest

from agentq.v1 import job_pb2
from server.settings import Settings
from tests.e2e.database_outage import database_down
from tests.e2e.harness import WorkerProcess, running_server, token


def test_a_database_outage_is_unavailable_not_internal(scaled_settings: Settings) -> None:
    with (
        running_server(scaled_settings, in_process_workers=False) as server,
        server.client(token()) as client,
    ):
        agent = client.create_agent()
        with database_down(scaled_settings.database_url), pytest.raises(grpc.RpcError) as raised:
            client.get_agent(agent.id)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert raised.value.details() == "Database unavailable"
        # Once the database is back, so is the service.
        assert client.get_agent(agent.id).id == agent.id


def _lose(job_ids: Sequence[str]) -> None:
    raise ConnectionError("broker unreachable")


def test_a_job_whose_message_was_lost_still_runs(
    scaled_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        running_server(scaled_settings, in_process_workers=False) as server,
        server.client(token()) as client,
    ):
        # Every send fails, as when the broker drops out (or the process dies)
        # between committing the job and sending its message.
        with monkeypatch.context() as patched:
            patched.setattr(server.runtime.queue, "enqueue_many", _lose)
            agent = client.create_agent()
            ack = client.execute(agent.id)
            assert ack.response == f"Job queued: {ack.job_id}"
            assert client.get_job(ack.job_id).status == job_pb2.JOB_STATUS_PENDING
        # A worker's recovery sweep finds the job whose message never left.
        worker = WorkerProcess(
            scaled_settings.model_copy(update={"requeue_after_s": 1}), concurrency=1
        )
        try:
            job = client.wait_finished(ack.job_id, timeout_s=30)
        finally:
            worker.stop()
    assert job.status == job_pb2.JOB_STATUS_COMPLETED
    assert job.attempts == 1


def test_a_redis_outage_is_unavailable_and_lets_nothing_through(scaled_settings: Settings) -> None:
    # Nothing listens on port 1: the rate limiter cannot check the tenant's bucket.
    dead = scaled_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with (
        running_server(dead, in_process_workers=False) as server,
        server.client(token()) as client,
        pytest.raises(grpc.RpcError) as raised,
    ):
        client.create_agent()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert raised.value.details() == "Rate limiter unavailable"
    with server.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM agents").scalar_one() == 0
