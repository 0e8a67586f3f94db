"""Job event streams (Server-Sent Events) over real HTTP: replay, resumption on another server
process, keep-alives, and errors before and during a stream.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx

from server.settings import Settings
from tests.e2e.harness import ServerThread, running_rest, running_server, settings_for, token
from tests.e2e.rest_helpers import (
    FINISHED,
    KEEP_ALIVE,
    LONG_PROMPT,
    STREAMED_RUN,
    TIMEOUT_S,
    Event,
    alice_and_bob,
    assert_error,
    assert_well_formed,
    cancel,
    create_agent,
    embedded_rest,
    get_job,
    http_client,
    read_stream,
    serve_processes,
    sse,
    stream_url,
    submit,
    wait_for,
    with_latency,
    worker_processes,
)

# --- Event streams ---------------------------------------------------------------------------


def test_a_stream_dropped_mid_job_resumes_on_another_server_process_with_every_event_once(
    scaled_settings: Settings,
) -> None:
    settings = with_latency(scaled_settings, 2.0)
    with (
        serve_processes(settings, 2) as (first, second),
        worker_processes(settings, count=1, concurrency=1),
        http_client(first.url, token()) as http_a,
        http_client(second.url, token()) as http_b,
    ):
        assert first.process.pid != second.process.pid
        agent = create_agent(http_a)
        job_id = submit(http_a, agent["id"], LONG_PROMPT)

        seen_a: list[Event] = []
        with http_a.stream("GET", stream_url(job_id)) as response:
            assert response.status_code == 200, response.read()
            for item in sse(response):
                if isinstance(item, Event):
                    seen_a.append(item)
                if len(seen_a) == 3:
                    break  # the client drops the connection mid-job
        assert get_job(http_b, job_id)["status"] == "running", "the drop was not mid-job"

        seen_b = read_stream(http_b, job_id, last_event_id=seen_a[-1].id)
        job = get_job(http_b, job_id)

    events = seen_a + seen_b
    ids = [e.id for e in events]
    assert ids == list(range(1, len(events) + 1)), ids
    assert [e.name for e in events] == STREAMED_RUN
    assert_well_formed(events, job_id)
    assert [e.data["attempt"] for e in events] == [0, 1, 1, 1, 1, 1, 1]
    final = events[-1].data["result"]
    assert final["success"] is True
    assert job["status"] == "completed"
    assert final == job["result"]
    assert "".join(e.data["delta"] for e in events if e.name == "token") == final["response"]


def test_a_stream_of_a_finished_job_replays_every_event_and_ends(tmp_path: Path) -> None:
    with (
        embedded_rest(tmp_path, builtin_latency_ms=200) as (_, rest),
        http_client(rest.url, token()) as http,
    ):
        agent = create_agent(http)
        job_id = submit(http, agent["id"], LONG_PROMPT)
        job = wait_for(http, job_id, FINISHED)
        started = time.monotonic()
        replayed = read_stream(http, job_id)
        took = time.monotonic() - started
        resumed = read_stream(http, job_id, last_event_id=5)
        after_the_end = read_stream(http, job_id, last_event_id=len(STREAMED_RUN))
    assert took < 5, "the stream of a finished job did not end"
    assert [e.id for e in replayed] == list(range(1, len(STREAMED_RUN) + 1))
    assert [e.name for e in replayed] == STREAMED_RUN
    assert_well_formed(replayed, job_id)
    assert replayed[-1].data["result"] == job["result"]
    deltas = "".join(e.data["delta"] for e in replayed if e.name == "token")
    assert deltas == job["result"]["response"]
    assert resumed == replayed[5:]
    assert after_the_end == []


def test_a_stream_of_an_unknown_or_foreign_job_is_a_json_404_not_an_event_stream(
    tmp_path: Path,
) -> None:
    with (
        embedded_rest(tmp_path) as (_, rest),
        alice_and_bob(rest) as (alice, bob),
    ):
        unknown = str(uuid.uuid4())
        assert_error(alice.get(stream_url(unknown)), 404, "NOT_FOUND", f"Job {unknown} not found")
        alices_job = submit(alice, create_agent(alice)["id"])
        assert_error(
            bob.get(stream_url(alices_job)), 404, "NOT_FOUND", f"Job {alices_job} not found"
        )
        not_a_uuid = alice.get(stream_url("job-1"))
        assert not_a_uuid.status_code == 422, not_a_uuid.text
        assert not_a_uuid.json()["error"]["code"] == "VALIDATION_ERROR"


def test_a_stream_without_a_valid_token_is_a_json_401_not_an_event_stream(tmp_path: Path) -> None:
    url = stream_url(str(uuid.uuid4()))
    with embedded_rest(tmp_path) as (_, rest):
        missing = httpx.get(rest.url + url, timeout=TIMEOUT_S)
        bad = {"Authorization": "Bearer not-a-jwt"}
        invalid = httpx.get(rest.url + url, headers=bad, timeout=TIMEOUT_S)
    assert_error(missing, 401, "UNAUTHORIZED", "Missing Authorization header")
    assert_error(invalid, 401, "UNAUTHORIZED", "Invalid token")


def test_a_quiet_stream_sends_keep_alive_comments_until_its_job_ends(tmp_path: Path) -> None:
    # No workers: the job stays pending, and its stream has nothing to say.
    settings = settings_for(database_url=f"sqlite:///{tmp_path / 'agentq.db'}")
    with (
        running_server(settings, in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}", stream_keepalive_s=0.5) as rest,
        http_client(rest.url, token()) as http,
        http_client(rest.url, token()) as other,
    ):
        job_id = submit(http, create_agent(http)["id"])
        opening: list[Event | str] = []
        with http.stream("GET", stream_url(job_id)) as response:
            assert response.status_code == 200
            assert response.headers["cache-control"] == "no-cache"
            items = sse(response)
            for item in items:
                opening.append(item)
                if opening.count(KEEP_ALIVE) == 2:
                    break
            cancel(other, job_id)
            closing = list(items)
    assert isinstance(opening[0], Event) and opening[0].name == "queued"
    assert opening[1:] == [KEEP_ALIVE, KEEP_ALIVE]
    ends = [item for item in closing if isinstance(item, Event)]
    assert [(e.id, e.name) for e in ends] == [(2, "cancelled")]


def test_a_stream_whose_grpc_server_goes_away_ends_with_an_in_band_error_event(
    tmp_path: Path,
) -> None:
    settings = settings_for(database_url=f"sqlite:///{tmp_path / 'agentq.db'}")
    server = ServerThread(settings, in_process_workers=False).start()
    running = True
    try:
        with (
            running_rest(f"127.0.0.1:{server.port}", stream_keepalive_s=5) as rest,
            http_client(rest.url, token()) as http,
        ):
            job_id = submit(http, create_agent(http)["id"])
            with http.stream("GET", stream_url(job_id)) as response:
                assert response.status_code == 200
                items = sse(response)
                first = next(items)
                server.stop()
                running = False
                rest_of_stream = list(items)
    finally:
        if running:
            server.stop()
    assert isinstance(first, Event) and first.name == "queued"
    errors = [item for item in rest_of_stream if isinstance(item, Event)]
    assert len(errors) == 1, rest_of_stream
    assert errors[0].name == "error"
    assert errors[0].id is None
    assert errors[0].data == {
        "code": "SERVICE_UNAVAILABLE",
        "message": errors[0].data["message"],
        "status": 503,
    }
