"""Webhooks scaled out (README, Webhooks): PostgreSQL and Redis, a server without workers,
and an `agentq worker` process that runs the jobs and sends their deliveries, to a
receiver that was down for part of the run and still gets every event once.
"""

from __future__ import annotations

import httpx
import pytest

from server.settings import Settings
from tests.e2e.harness import WorkerProcess, running_rest, running_server, token
from tests.e2e.rest_errors_helpers import VALID_AGENT
from tests.e2e.webhook_helpers import FAST_WEBHOOKS
from tests.webhook_receiver import running_receiver

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
TIMEOUT_S = 60


def test_a_worker_process_sends_every_event_once_to_a_receiver_that_was_down(
    scaled_settings: Settings,
) -> None:
    settings = scaled_settings.model_copy(update=FAST_WEBHOOKS)
    headers = {"Authorization": f"Bearer {token('alice')}"}
    with (
        running_receiver() as receiver,
        running_server(settings, in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
        httpx.Client(base_url=rest.url, headers=headers, timeout=TIMEOUT_S) as http,
    ):
        created = http.post(
            "/api/v1/webhooks",
            json={"url": receiver.url(), "event_types": ["job.completed", "order.created"]},
        )
        assert created.status_code == 201, created.text
        receiver.secret, receiver.down = created.json()["secret"], True
        agent = http.post("/api/v1/agents", json=VALID_AGENT).json()["id"]
        job_ids = [
            http.post(f"/api/v1/agents/{agent}/execute", json={"prompt": "2+2?"}).json()["job_id"]
            for _ in range(2)
        ]
        event_id = http.post("/api/v1/events", json={"type": "order.created"}).json()["id"]
        worker = WorkerProcess(settings)
        try:
            deliveries = f"/api/v1/webhooks/{created.json()['id']}/deliveries"

            def tried() -> bool:
                found = http.get(deliveries).json()["data"]
                return len(found) == 3 and all(d["attempts"] >= 1 for d in found)

            receiver.wait_for(tried, timeout_s=TIMEOUT_S)
            receiver.down = False
            receiver.wait_for(lambda: len(receiver.unique()) == 3, timeout_s=TIMEOUT_S)
            receiver.wait_for(
                lambda: all(
                    d["status"] == "succeeded" for d in http.get(deliveries).json()["data"]
                ),
                timeout_s=TIMEOUT_S,
            )
        finally:
            worker.stop()
        received = receiver.unique()
        assert all(r.verified for r in receiver.taken())
        assert received[event_id]["type"] == "order.created"
        jobs = {b["data"]["job_id"]: b["data"] for i, b in received.items() if i != event_id}
        assert set(jobs) == set(job_ids)
        for job_id, data in jobs.items():
            assert data == http.get(f"/api/v1/jobs/{job_id}").json()
