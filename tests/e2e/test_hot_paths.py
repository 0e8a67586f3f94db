"""The asyncpg paths of Execute and GetJob under callers that hang up, on PostgreSQL + Redis.

An Execute whose caller goes away mid-call may or may not have stored its job;
a stored job must still get its message at once (not after the sweeper's
delay), and the server must still stop promptly.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from sqlalchemy import func, select

from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import agent_service_pb2_grpc as agents_grpc
from server.store.models import Job, JobStatus
from tests.e2e.harness import WorkerProcess, running_server, token

CALLS = 200


def _count(server: Any, *conditions: Any) -> int:
    with server.engine.connect() as connection:
        query = select(func.count()).select_from(Job).where(*conditions)
        return int(connection.execute(query).scalar_one())


def test_jobs_of_callers_that_hang_up_are_all_sent_and_the_server_stops_promptly(
    scaled_settings: Any,
) -> None:
    # The sweeper must not be what sends them: it waits an hour here.
    settings = scaled_settings.model_copy(update={"requeue_after_s": 3600})
    metadata = (("authorization", f"Bearer {token()}"),)
    with running_server(settings, in_process_workers=False) as server:
        with server.client(token()) as client:
            agent = client.create_agent()
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = agents_grpc.AgentServiceStub(channel)
            request = agents_pb.ExecuteRequest(agent_id=agent.id, prompt="hang up")
            calls = [
                stub.Execute.future(request, metadata=metadata, timeout=30) for _ in range(CALLS)
            ]
            time.sleep(0.05)
            for call in calls:
                call.cancel()
        time.sleep(1)
        stored = _count(server)

        worker = WorkerProcess(settings, concurrency=4)
        try:
            deadline = time.monotonic() + 60
            while _count(server, Job.status == JobStatus.PENDING) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            worker.stop()
        pending = _count(server, Job.status == JobStatus.PENDING)
        completed = _count(server, Job.status == JobStatus.COMPLETED)
        stopping = time.monotonic()
    stop_s = time.monotonic() - stopping

    assert stored > 0
    assert pending == 0, f"{pending} of {stored} stored jobs never got their message"
    assert completed == stored
    assert stop_s < 10
