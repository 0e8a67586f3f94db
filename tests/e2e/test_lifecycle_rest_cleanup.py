"""What goes away over real HTTP: a deleted agent's jobs, and finished jobs after retention."""

from __future__ import annotations

import time
from pathlib import Path

from server.settings import Settings
from tests.e2e.harness import token
from tests.e2e.rest_helpers import (
    FINISHED,
    LONG_PROMPT,
    assert_error,
    create_agent,
    embedded_rest,
    execute,
    get_job,
    http_client,
    read_stream,
    scaled_stack,
    stays,
    stream_url,
    submit,
    wait_for,
    wait_running,
    with_latency,
)

# --- Deleting an agent -----------------------------------------------------------------------


def test_deleting_an_agent_cancels_its_unfinished_jobs_and_keeps_its_finished_ones_readable(
    scaled_settings: Settings,
) -> None:
    settings = with_latency(scaled_settings, 1.5)
    with scaled_stack(settings, count=1, concurrency=1) as (_, http):
        agent = create_agent(http, name="doomed")
        keeper = create_agent(http, name="keeper")
        finished = submit(http, agent["id"], "First task")
        assert wait_for(http, finished, FINISHED)["status"] == "completed"
        running = submit(http, agent["id"], LONG_PROMPT)
        wait_running(http, running)
        # The only worker thread is busy: this one waits.
        pending = submit(http, agent["id"], "Third task")
        assert get_job(http, pending)["status"] == "pending"

        deleted = http.delete(f"/api/v1/agents/{agent['id']}")
        assert deleted.status_code == 204, deleted.text
        assert deleted.content == b""

        assert get_job(http, pending)["status"] == "cancelled"
        assert wait_for(http, running, FINISHED, timeout_s=5)["status"] == "cancelled"
        assert_error(http.get(f"/api/v1/agents/{agent['id']}"), 404, "NOT_FOUND", "Agent not found")
        listed = http.get("/api/v1/agents")
        assert listed.status_code == 200, listed.text
        assert [a["id"] for a in listed.json()["data"]] == [keeper["id"]]
        assert_error(execute(http, agent["id"]), 404, "NOT_FOUND", "Agent not found")
        assert_error(
            http.delete(f"/api/v1/agents/{agent['id']}"), 404, "NOT_FOUND", "Agent not found"
        )
        kept = get_job(http, finished)
        assert kept["status"] == "completed"
        assert kept["result"]["success"] is True
        assert read_stream(http, finished)[-1].name == "completed"
        # When the worker gets to the cancelled pending job, it leaves it alone.
        late = stays(http, pending, "cancelled", until=time.monotonic() + 1.0)
    assert late["attempts"] == 0


# --- Retention -------------------------------------------------------------------------------


def test_a_finished_job_is_removed_after_retention_and_its_idempotency_key_is_free_again(
    tmp_path: Path,
) -> None:
    with (
        embedded_rest(tmp_path, retention_s=2, recovery_interval_s=0.5) as (_, rest),
        http_client(rest.url, token()) as http,
    ):
        agent = create_agent(http)
        first = submit(http, agent["id"], "Nightly report", key="nightly")
        assert wait_for(http, first, FINISHED)["status"] == "completed"
        assert submit(http, agent["id"], "Nightly report", key="nightly") == first

        deadline = time.monotonic() + 15
        while (gone := http.get(f"/api/v1/jobs/{first}")).status_code == 200:
            assert time.monotonic() < deadline, "the finished job outlived its retention"
            time.sleep(0.1)
        assert_error(gone, 404, "NOT_FOUND", f"Job {first} not found")

        again = submit(http, agent["id"], "Nightly report", key="nightly")
        assert again != first
        assert wait_for(http, again, FINISHED)["status"] == "completed"
        assert submit(http, agent["id"], "Nightly report", key="nightly") == again
        listed = http.get("/api/v1/jobs", params={"agent_id": agent["id"]}).json()["data"]
        assert first not in [j["job_id"] for j in listed]
        # Its events went with it.
        assert_error(http.get(stream_url(first)), 404, "NOT_FOUND", f"Job {first} not found")
