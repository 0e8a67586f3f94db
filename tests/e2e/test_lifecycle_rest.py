"""The job lifecycle over real HTTP: idempotent submits, cancel, event streams, delete, sub-agents.

The tests of the issue's checks run PostgreSQL, Redis and `agentq worker` processes; the
others run the embedded default. Assertions are on what a REST client sees, plus the rows
a client cannot see but would suffer from (a duplicate job, a job run twice).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, func, select

from server.settings import Settings
from server.store.models import IdempotencyKey, Job
from tests.e2e.harness import (
    RestThread,
    ServerThread,
    WorkerProcess,
    env_for,
    running_rest,
    running_server,
    settings_for,
    token,
)

FINISHED = ("completed", "failed", "cancelled")
TIMEOUT_S = 15
KEEP_ALIVE = ": keep-alive"
# The events of one builtin run with a latency: it answers in four pieces.
STREAMED_RUN = ["queued", "started", "token", "token", "token", "token", "completed"]
LONG_PROMPT = "Explain in plain words how a queue hands work to many workers"


# --- HTTP helpers ----------------------------------------------------------------------------


def _http(base_url: str, bearer: str) -> httpx.Client:
    """A client of one REST shim carrying a caller's token."""
    headers = {"Authorization": f"Bearer {bearer}"}
    return httpx.Client(base_url=base_url, headers=headers, timeout=TIMEOUT_S)


def _create_agent(http: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"name": "worker-bee", "role": "You are a careful assistant.", **fields}
    response = http.post("/api/v1/agents", json=body)
    assert response.status_code == 201, response.text
    agent: dict[str, Any] = response.json()
    return agent


def _execute(
    http: httpx.Client,
    agent_id: str,
    prompt: str = "What is 2+2?",
    *,
    key: str | None = None,
    **fields: Any,
) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    body = {"prompt": prompt, **fields}
    return http.post(f"/api/v1/agents/{agent_id}/execute", json=body, headers=headers)


def _submit(http: httpx.Client, agent_id: str, prompt: str = "What is 2+2?", **extra: Any) -> str:
    """Queue an execution; the id of the acknowledged job."""
    response = _execute(http, agent_id, prompt, **extra)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    assert response.json()["response"] == f"Job queued: {job_id}"
    return job_id


def _job(http: httpx.Client, job_id: str) -> dict[str, Any]:
    response = http.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def _wait_for(
    http: httpx.Client, job_id: str, statuses: tuple[str, ...], *, timeout_s: float = 30
) -> dict[str, Any]:
    """Poll the job until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = _job(http, job_id)
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout_s}s"
        time.sleep(0.02)


def _wait_running(http: httpx.Client, job_id: str) -> None:
    job = _wait_for(http, job_id, ("running", *FINISHED), timeout_s=20)
    assert job["status"] == "running", job


def _cancel(http: httpx.Client, job_id: str) -> dict[str, Any]:
    response = http.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def _assert_error(response: httpx.Response, status: int, code: str, message: str) -> None:
    """The contract's error body, with `message` as the error's text."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == {"code": code, "message": message, "status": status}, body
    if isinstance(body["detail"], str):
        assert body["detail"] == message
    else:
        assert body["detail"][0]["msg"] == message


def _stays(http: httpx.Client, job_id: str, status: str, *, until: float) -> dict[str, Any]:
    """Poll until the monotonic time `until`, asserting the job keeps `status`."""
    while True:
        job = _job(http, job_id)
        assert job["status"] == status, job
        if time.monotonic() >= until:
            return job
        time.sleep(0.1)


# --- Server-Sent Events ----------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One SSE message: its `id:`, `event:` and parsed `data:`."""

    id: int | None
    name: str
    data: dict[str, Any]


def _sse(response: httpx.Response) -> Iterator[Event | str]:
    """The messages of an SSE response as they arrive; a comment comes as its line."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            yield line
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif fields:
            event_id = int(fields["id"]) if "id" in fields else None
            yield Event(event_id, fields["event"], json.loads(fields["data"]))
            fields = {}


def _stream_url(job_id: str) -> str:
    return f"/api/v1/jobs/{job_id}/stream"


def _read_stream(
    http: httpx.Client, job_id: str, *, last_event_id: int | None = None
) -> list[Event]:
    """Every event of a stream, read until the server ends it."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    with http.stream("GET", _stream_url(job_id), headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return [item for item in _sse(response) if isinstance(item, Event)]


def _assert_well_formed(events: list[Event], job_id: str) -> None:
    for event in events:
        assert event.data["job_id"] == job_id
        assert event.data["sequence"] == event.id
        assert event.data["type"] == event.name


# --- Running the pieces ----------------------------------------------------------------------


@contextmanager
def _scaled(settings: Settings, **rest_overrides: Any) -> Iterator[tuple[ServerThread, RestThread]]:
    """A gRPC server without workers on PostgreSQL + Redis, and a REST shim in front of it."""
    with (
        running_server(settings, in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}", **rest_overrides) as rest,
    ):
        yield server, rest


@contextmanager
def _workers(settings: Settings, *, count: int = 2, concurrency: int = 2) -> Iterator[None]:
    """`count` worker processes, stopped on exit."""
    started: list[WorkerProcess] = []
    try:
        # Side by side: each takes about a second to start.
        with ThreadPoolExecutor(count) as pool:
            starting = [
                pool.submit(WorkerProcess, settings, concurrency=concurrency) for _ in range(count)
            ]
            wait(starting)
        started.extend(f.result() for f in starting if f.exception() is None)
        for future in starting:
            future.result()  # raises the first failure to start
        yield
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.process.terminate()  # all at once; stop() then waits for each
        for worker in started:
            worker.stop()


@contextmanager
def _embedded(tmp_path: Path, **overrides: Any) -> Iterator[tuple[ServerThread, RestThread]]:
    """The embedded default (SQLite, in-process workers) and a REST shim in front of it."""
    settings = settings_for(database_url=f"sqlite:///{tmp_path / 'agentq.db'}", **overrides)
    with (
        running_server(settings, in_process_workers=True) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
    ):
        yield server, rest


class ServeProcess:
    """`agentq serve` (gRPC and REST in one process) in a child process, on free ports."""

    _REST_PORT = re.compile(r"agentq REST listening on port (\d+)")

    def __init__(self, settings: Settings) -> None:
        env = env_for(settings)
        env.update(AGENTQ_GRPC_ADDR="127.0.0.1:0", AGENTQ_HTTP_ADDR="127.0.0.1:0")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        self._port: int | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = ""

    def wait_ready(self) -> None:
        """Wait until its REST shim listens; fail with its output if it never does."""
        if not self._ready.wait(timeout=60) or self._port is None:
            self.stop()
            raise AssertionError("agentq serve did not start:\n" + "".join(self._lines))
        self.url = f"http://127.0.0.1:{self._port}"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)
            found = self._REST_PORT.search(line)
            if found:
                self._port = int(found.group(1))
                self._ready.set()
        self._ready.set()  # it exited before listening

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextmanager
def _serve_processes(settings: Settings, count: int) -> Iterator[list[ServeProcess]]:
    """`count` server processes on the same database and broker, started side by side."""
    processes: list[ServeProcess] = []
    try:
        processes.extend(ServeProcess(settings) for _ in range(count))
        for process in processes:
            process.wait_ready()
        yield processes
    finally:
        for process in processes:
            if process.process.poll() is None:
                process.process.terminate()  # all at once; stop() then waits for each
        for process in processes:
            process.stop()


def _count(engine: Engine, model: type[Job] | type[IdempotencyKey], *where: Any) -> int:
    with engine.connect() as connection:
        query = select(func.count()).select_from(model).where(*where)
        return int(connection.execute(query).scalar_one())


# --- Idempotent submits ----------------------------------------------------------------------

CONCURRENT_SUBMITS = 200


async def _submit_concurrently(
    base_url: str, bearer: str, agent_id: str, body: dict[str, Any], *, key: str
) -> list[httpx.Response]:
    """CONCURRENT_SUBMITS identical execute requests, all in flight at once."""
    limits = httpx.Limits(max_connections=CONCURRENT_SUBMITS)
    headers = {"Authorization": f"Bearer {bearer}", "Idempotency-Key": key}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=60, limits=limits
    ) as http:
        url = f"/api/v1/agents/{agent_id}/execute"
        return list(
            await asyncio.gather(*(http.post(url, json=body) for _ in range(CONCURRENT_SUBMITS)))
        )


def test_two_hundred_concurrent_submits_with_one_idempotency_key_make_one_job_run_once(
    scaled_settings: Settings,
) -> None:
    body = {"prompt": "Count the sheep in the field", "max_debate_rounds": 2}
    with (
        _scaled(scaled_settings) as (server, rest),
        _workers(scaled_settings),
        _http(rest.url, token("alice")) as http,
    ):
        agent = _create_agent(http)
        responses = asyncio.run(
            _submit_concurrently(rest.url, token("alice"), agent["id"], body, key="sheep-1")
        )
        refused = [r.text for r in responses if r.status_code != 202]
        assert Counter(r.status_code for r in responses) == {202: CONCURRENT_SUBMITS}, refused[:3]
        job_ids = {r.json()["job_id"] for r in responses}
        assert len(job_ids) == 1, f"{len(job_ids)} jobs for one idempotency key"
        (job_id,) = job_ids
        assert {r.json()["response"] for r in responses} == {f"Job queued: {job_id}"}

        job = _wait_for(http, job_id, FINISHED)
        # A retry after the job finished still answers with the same job.
        assert _submit(http, agent["id"], key="sheep-1", **body) == job_id
        events = _read_stream(http, job_id)
        engine = server.engine
        assert _count(engine, Job, Job.tenant_id == "alice") == 1
        assert _count(engine, IdempotencyKey, IdempotencyKey.tenant_id == "alice") == 1
    assert job["status"] == "completed", job
    assert job["attempts"] == 1
    assert [e.name for e in events] == ["queued", "started", "completed"]


def test_an_idempotency_key_reused_with_a_different_request_is_a_conflict(
    scaled_settings: Settings,
) -> None:
    key_reused = "Idempotency key reused with a different request"
    with _scaled(scaled_settings) as (server, rest), _http(rest.url, token("alice")) as http:
        agent = _create_agent(http)
        other_agent = _create_agent(http, name="second")
        first = _submit(http, agent["id"], "Plan the trip", key="trip-1")
        assert _submit(http, agent["id"], "Plan the trip", key="trip-1") == first
        for response in (
            _execute(http, agent["id"], "Plan another trip", key="trip-1"),
            _execute(http, agent["id"], "Plan the trip", key="trip-1", max_debate_rounds=5),
            _execute(http, agent["id"], "Plan the trip", key="trip-1", context_id="ctx-9"),
            _execute(http, other_agent["id"], "Plan the trip", key="trip-1"),
        ):
            _assert_error(response, 409, "CONFLICT", key_reused)
        # The original job is untouched, and nothing else was stored.
        assert _job(http, first)["agent_id"] == agent["id"]
        assert _count(server.engine, Job) == 1


def test_an_idempotency_key_is_per_tenant(scaled_settings: Settings) -> None:
    with (
        _scaled(scaled_settings) as (server, rest),
        _http(rest.url, token("alice")) as alice,
        _http(rest.url, token("bob")) as bob,
    ):
        alices_agent = _create_agent(alice)
        alices_job = _submit(alice, alices_agent["id"], "Plan the trip", key="trip-1")
        # Bob's key does not reach Alice's job, nor her agent.
        _assert_error(
            _execute(bob, alices_agent["id"], "Plan the trip", key="trip-1"),
            404,
            "NOT_FOUND",
            "Agent not found",
        )
        bobs_agent = _create_agent(bob)
        bobs_job = _submit(bob, bobs_agent["id"], "Plan the trip", key="trip-1")
        assert bobs_job != alices_job
        assert _submit(bob, bobs_agent["id"], "Plan the trip", key="trip-1") == bobs_job
        assert _job(bob, bobs_job)["agent_id"] == bobs_agent["id"]
        _assert_error(
            bob.get(f"/api/v1/jobs/{alices_job}"), 404, "NOT_FOUND", f"Job {alices_job} not found"
        )
        engine = server.engine
        assert _count(engine, Job, Job.tenant_id == "alice") == 1
        assert _count(engine, Job, Job.tenant_id == "bob") == 1


def test_a_request_id_in_the_body_is_an_idempotency_key_and_the_header_wins_over_it(
    scaled_settings: Settings,
) -> None:
    with _scaled(scaled_settings) as (server, rest), _http(rest.url, token()) as http:
        agent = _create_agent(http)
        first = _submit(http, agent["id"], "Plan the trip", request_id="trip-1")
        assert _submit(http, agent["id"], "Plan the trip", request_id="trip-1") == first
        assert _submit(http, agent["id"], "Plan the trip", key="trip-1") == first
        second = _submit(http, agent["id"], "Plan the trip", key="trip-2", request_id="trip-1")
        assert second != first
        assert _submit(http, agent["id"], "Plan the trip", key="trip-2") == second
        assert _count(server.engine, Job) == 2


def test_an_idempotency_key_longer_than_255_characters_is_refused_and_nothing_is_stored(
    scaled_settings: Settings,
) -> None:
    with _scaled(scaled_settings) as (server, rest), _http(rest.url, token("alice")) as http:
        agent = _create_agent(http)
        response = _execute(http, agent["id"], key="k" * 256)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
        assert _submit(http, agent["id"], key="k" * 255)
        assert _count(server.engine, Job) == 1


# --- Cancel ----------------------------------------------------------------------------------


def test_cancelling_a_pending_job_cancels_it_at_once_and_no_worker_ever_runs_it(
    scaled_settings: Settings,
) -> None:
    with _scaled(scaled_settings) as (_, rest), _http(rest.url, token()) as http:
        agent = _create_agent(http)
        # No worker is running yet: the job is certainly still pending.
        job_id = _submit(http, agent["id"], "Never run me")
        cancelled = _cancel(http, job_id)
        assert cancelled["status"] == "cancelled"
        assert cancelled["completed_at"] is not None
        assert cancelled["attempts"] == 0
        assert cancelled["started_at"] is None
        assert cancelled["result"] is None
        with _workers(scaled_settings):
            control = _submit(http, agent["id"], "Run me")
            assert _wait_for(http, control, FINISHED)["status"] == "completed"
            # The cancelled job's message came first; give it time to be dropped.
            later = _stays(http, job_id, "cancelled", until=time.monotonic() + 1.0)
        events = _read_stream(http, job_id)
    assert later == cancelled
    assert [e.name for e in events] == ["queued", "cancelled"]


def test_cancelling_a_running_job_stops_it_within_two_seconds_and_it_never_completes(
    scaled_settings: Settings,
) -> None:
    latency_s = 3.0
    settings = scaled_settings.model_copy(update={"builtin_latency_ms": int(latency_s * 1000)})
    with (
        _scaled(settings) as (_, rest),
        _workers(settings),
        _http(rest.url, token()) as http,
    ):
        agent = _create_agent(http)
        job_id = _submit(http, agent["id"], LONG_PROMPT)
        _wait_running(http, job_id)
        asked = time.monotonic()
        answer = _cancel(http, job_id)
        assert answer["status"] in ("running", "cancelled"), answer
        job = _wait_for(http, job_id, FINISHED, timeout_s=5)
        took = time.monotonic() - asked
        assert job["status"] == "cancelled", job
        assert took < 2.0, f"the running job took {took:.1f}s to stop"
        # The provider would have answered by now; the job must not complete after all.
        _stays(http, job_id, "cancelled", until=asked + latency_s + 0.5)
        events = _read_stream(http, job_id)
    assert job["completed_at"] is not None
    assert job["attempts"] == 1
    assert job["result"] is None
    assert job["error"] is None
    names = [e.name for e in events]
    assert names[:2] == ["queued", "started"]
    assert names[-1] == "cancelled"
    assert "completed" not in names
    assert names.count("token") < 4


def test_cancelling_a_finished_job_is_a_conflict_and_cancelling_twice_is_harmless(
    scaled_settings: Settings,
) -> None:
    with (
        _scaled(scaled_settings) as (_, rest),
        _http(rest.url, token("alice")) as http,
        _http(rest.url, token("bob")) as bob,
    ):
        agent = _create_agent(http)
        twice = _submit(http, agent["id"], "Cancel me twice")
        first = _cancel(http, twice)
        second = _cancel(http, twice)
        assert first["status"] == second["status"] == "cancelled"
        assert second == first
        with _workers(scaled_settings, count=1):
            done = _submit(http, agent["id"], "Finish me")
            assert _wait_for(http, done, FINISHED)["status"] == "completed"
        _assert_error(
            http.post(f"/api/v1/jobs/{done}/cancel"),
            409,
            "CONFLICT",
            f"Job {done} is already completed",
        )
        assert _job(http, done)["status"] == "completed"
        unknown = str(uuid.uuid4())
        _assert_error(
            http.post(f"/api/v1/jobs/{unknown}/cancel"),
            404,
            "NOT_FOUND",
            f"Job {unknown} not found",
        )
        # Another tenant can neither cancel the job nor learn that it exists.
        _assert_error(
            bob.post(f"/api/v1/jobs/{done}/cancel"), 404, "NOT_FOUND", f"Job {done} not found"
        )
        assert _job(http, twice) == first


# --- Event streams ---------------------------------------------------------------------------


def test_a_stream_dropped_mid_job_resumes_on_another_server_process_with_every_event_once(
    scaled_settings: Settings,
) -> None:
    settings = scaled_settings.model_copy(update={"builtin_latency_ms": 2000})
    with (
        _serve_processes(settings, 2) as (first, second),
        _workers(settings, count=1, concurrency=1),
        _http(first.url, token()) as http_a,
        _http(second.url, token()) as http_b,
    ):
        assert first.process.pid != second.process.pid
        agent = _create_agent(http_a)
        job_id = _submit(http_a, agent["id"], LONG_PROMPT)

        seen_a: list[Event] = []
        with http_a.stream("GET", _stream_url(job_id)) as response:
            assert response.status_code == 200, response.read()
            for item in _sse(response):
                if isinstance(item, Event):
                    seen_a.append(item)
                if len(seen_a) == 3:
                    break  # the client drops the connection mid-job
        assert _job(http_b, job_id)["status"] == "running", "the drop was not mid-job"

        seen_b = _read_stream(http_b, job_id, last_event_id=seen_a[-1].id)
        job = _job(http_b, job_id)

    events = seen_a + seen_b
    ids = [e.id for e in events]
    assert ids == list(range(1, len(events) + 1)), ids
    assert [e.name for e in events] == STREAMED_RUN
    _assert_well_formed(events, job_id)
    assert [e.data["attempt"] for e in events] == [0, 1, 1, 1, 1, 1, 1]
    final = events[-1].data["result"]
    assert final["success"] is True
    assert job["status"] == "completed"
    assert final == job["result"]
    assert "".join(e.data["delta"] for e in events if e.name == "token") == final["response"]


def test_a_stream_of_a_finished_job_replays_every_event_and_ends(tmp_path: Path) -> None:
    with _embedded(tmp_path, builtin_latency_ms=200) as (_, rest), _http(rest.url, token()) as http:
        agent = _create_agent(http)
        job_id = _submit(http, agent["id"], LONG_PROMPT)
        job = _wait_for(http, job_id, FINISHED)
        started = time.monotonic()
        replayed = _read_stream(http, job_id)
        took = time.monotonic() - started
        resumed = _read_stream(http, job_id, last_event_id=5)
        after_the_end = _read_stream(http, job_id, last_event_id=len(STREAMED_RUN))
    assert took < 5, "the stream of a finished job did not end"
    assert [e.id for e in replayed] == list(range(1, len(STREAMED_RUN) + 1))
    assert [e.name for e in replayed] == STREAMED_RUN
    _assert_well_formed(replayed, job_id)
    assert replayed[-1].data["result"] == job["result"]
    deltas = "".join(e.data["delta"] for e in replayed if e.name == "token")
    assert deltas == job["result"]["response"]
    assert resumed == replayed[5:]
    assert after_the_end == []


def test_a_stream_of_an_unknown_or_foreign_job_is_a_json_404_not_an_event_stream(
    tmp_path: Path,
) -> None:
    with (
        _embedded(tmp_path) as (_, rest),
        _http(rest.url, token("alice")) as alice,
        _http(rest.url, token("bob")) as bob,
    ):
        unknown = str(uuid.uuid4())
        _assert_error(alice.get(_stream_url(unknown)), 404, "NOT_FOUND", f"Job {unknown} not found")
        alices_job = _submit(alice, _create_agent(alice)["id"])
        _assert_error(
            bob.get(_stream_url(alices_job)), 404, "NOT_FOUND", f"Job {alices_job} not found"
        )
        not_a_uuid = alice.get(_stream_url("job-1"))
        assert not_a_uuid.status_code == 422, not_a_uuid.text
        assert not_a_uuid.json()["error"]["code"] == "VALIDATION_ERROR"


def test_a_stream_without_a_valid_token_is_a_json_401_not_an_event_stream(tmp_path: Path) -> None:
    url = _stream_url(str(uuid.uuid4()))
    with _embedded(tmp_path) as (_, rest):
        missing = httpx.get(rest.url + url, timeout=TIMEOUT_S)
        bad = {"Authorization": "Bearer not-a-jwt"}
        invalid = httpx.get(rest.url + url, headers=bad, timeout=TIMEOUT_S)
    _assert_error(missing, 401, "UNAUTHORIZED", "Missing Authorization header")
    _assert_error(invalid, 401, "UNAUTHORIZED", "Invalid token")


def test_a_quiet_stream_sends_keep_alive_comments_until_its_job_ends(tmp_path: Path) -> None:
    # No workers: the job stays pending, and its stream has nothing to say.
    settings = settings_for(database_url=f"sqlite:///{tmp_path / 'agentq.db'}")
    with (
        running_server(settings, in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}", stream_keepalive_s=0.5) as rest,
        _http(rest.url, token()) as http,
        _http(rest.url, token()) as other,
    ):
        job_id = _submit(http, _create_agent(http)["id"])
        opening: list[Event | str] = []
        with http.stream("GET", _stream_url(job_id)) as response:
            assert response.status_code == 200
            assert response.headers["cache-control"] == "no-cache"
            items = _sse(response)
            for item in items:
                opening.append(item)
                if opening.count(KEEP_ALIVE) == 2:
                    break
            _cancel(other, job_id)
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
            _http(rest.url, token()) as http,
        ):
            job_id = _submit(http, _create_agent(http)["id"])
            with http.stream("GET", _stream_url(job_id)) as response:
                assert response.status_code == 200
                items = _sse(response)
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


# --- Deleting an agent -----------------------------------------------------------------------


def test_deleting_an_agent_cancels_its_unfinished_jobs_and_keeps_its_finished_ones_readable(
    scaled_settings: Settings,
) -> None:
    settings = scaled_settings.model_copy(update={"builtin_latency_ms": 1500})
    with (
        _scaled(settings) as (_, rest),
        _workers(settings, count=1, concurrency=1),
        _http(rest.url, token()) as http,
    ):
        agent = _create_agent(http, name="doomed")
        keeper = _create_agent(http, name="keeper")
        finished = _submit(http, agent["id"], "First task")
        assert _wait_for(http, finished, FINISHED)["status"] == "completed"
        running = _submit(http, agent["id"], LONG_PROMPT)
        _wait_running(http, running)
        # The only worker thread is busy: this one waits.
        pending = _submit(http, agent["id"], "Third task")
        assert _job(http, pending)["status"] == "pending"

        deleted = http.delete(f"/api/v1/agents/{agent['id']}")
        assert deleted.status_code == 204, deleted.text
        assert deleted.content == b""

        assert _job(http, pending)["status"] == "cancelled"
        assert _wait_for(http, running, FINISHED, timeout_s=5)["status"] == "cancelled"
        _assert_error(
            http.get(f"/api/v1/agents/{agent['id']}"), 404, "NOT_FOUND", "Agent not found"
        )
        listed = http.get("/api/v1/agents")
        assert listed.status_code == 200, listed.text
        assert [a["id"] for a in listed.json()["data"]] == [keeper["id"]]
        _assert_error(_execute(http, agent["id"]), 404, "NOT_FOUND", "Agent not found")
        _assert_error(
            http.delete(f"/api/v1/agents/{agent['id']}"), 404, "NOT_FOUND", "Agent not found"
        )
        kept = _job(http, finished)
        assert kept["status"] == "completed"
        assert kept["result"]["success"] is True
        assert _read_stream(http, finished)[-1].name == "completed"
        # When the worker gets to the cancelled pending job, it leaves it alone.
        late = _stays(http, pending, "cancelled", until=time.monotonic() + 1.0)
    assert late["attempts"] == 0


# --- Sub-agents ------------------------------------------------------------------------------


def test_a_sub_agent_job_is_one_level_below_its_parent_and_max_depth_is_enforced(
    scaled_settings: Settings,
) -> None:
    with (
        _scaled(scaled_settings) as (server, rest),
        _http(rest.url, token("alice")) as http,
        _http(rest.url, token("bob")) as bob,
    ):
        agent = _create_agent(http, max_depth=1)
        parent = _submit(http, agent["id"], "Split the work")
        child = _submit(http, agent["id"], "Do part one", parent_job_id=parent)
        assert (_job(http, parent)["parent_job_id"], _job(http, parent)["depth"]) == (None, 0)
        assert (_job(http, child)["parent_job_id"], _job(http, child)["depth"]) == (parent, 1)

        too_deep = _execute(http, agent["id"], "Do a sliver", parent_job_id=child)
        _assert_error(too_deep, 422, "VALIDATION_ERROR", "Execution depth 2 exceeds max_depth 1")
        flat = _create_agent(http, name="flat", max_depth=0)
        _assert_error(
            _execute(http, flat["id"], "Help", parent_job_id=parent),
            422,
            "VALIDATION_ERROR",
            "Execution depth 1 exceeds max_depth 0",
        )
        unknown = str(uuid.uuid4())
        _assert_error(
            _execute(http, agent["id"], "Orphan", parent_job_id=unknown),
            404,
            "NOT_FOUND",
            f"Job {unknown} not found",
        )
        # Another tenant cannot hang a job under Alice's.
        _assert_error(
            _execute(bob, _create_agent(bob)["id"], "Intrude", parent_job_id=parent),
            404,
            "NOT_FOUND",
            f"Job {parent} not found",
        )
        assert _count(server.engine, Job) == 2


def test_cancelling_a_parent_job_cancels_its_running_and_pending_children(
    scaled_settings: Settings,
) -> None:
    latency_s = 3.0
    settings = scaled_settings.model_copy(update={"builtin_latency_ms": int(latency_s * 1000)})
    with (
        _scaled(settings) as (_, rest),
        _workers(settings, count=1, concurrency=2),
        _http(rest.url, token()) as http,
    ):
        agent = _create_agent(http, max_depth=1)
        parent = _submit(http, agent["id"], LONG_PROMPT)
        _wait_running(http, parent)
        running_child = _submit(http, agent["id"], LONG_PROMPT, parent_job_id=parent)
        _wait_running(http, running_child)
        # Both worker slots are busy: this child waits.
        pending_child = _submit(http, agent["id"], LONG_PROMPT, parent_job_id=parent)
        assert _job(http, pending_child)["status"] == "pending"

        asked = time.monotonic()
        _cancel(http, parent)
        assert _job(http, pending_child)["status"] == "cancelled"
        for job_id in (parent, running_child):
            job = _wait_for(http, job_id, FINISHED, timeout_s=5)
            assert job["status"] == "cancelled", job
        took = time.monotonic() - asked
        assert took < 2.0, f"the running jobs took {took:.1f}s to stop"
        until = asked + latency_s + 0.5
        for job_id in (parent, running_child, pending_child):
            _stays(http, job_id, "cancelled", until=until)
        assert _job(http, pending_child)["attempts"] == 0


# --- Retention -------------------------------------------------------------------------------


def test_a_finished_job_is_removed_after_retention_and_its_idempotency_key_is_free_again(
    tmp_path: Path,
) -> None:
    with (
        _embedded(tmp_path, retention_s=2, recovery_interval_s=0.5) as (_, rest),
        _http(rest.url, token()) as http,
    ):
        agent = _create_agent(http)
        first = _submit(http, agent["id"], "Nightly report", key="nightly")
        assert _wait_for(http, first, FINISHED)["status"] == "completed"
        assert _submit(http, agent["id"], "Nightly report", key="nightly") == first

        deadline = time.monotonic() + 15
        while (gone := http.get(f"/api/v1/jobs/{first}")).status_code == 200:
            assert time.monotonic() < deadline, "the finished job outlived its retention"
            time.sleep(0.1)
        _assert_error(gone, 404, "NOT_FOUND", f"Job {first} not found")

        again = _submit(http, agent["id"], "Nightly report", key="nightly")
        assert again != first
        assert _wait_for(http, again, FINISHED)["status"] == "completed"
        assert _submit(http, agent["id"], "Nightly report", key="nightly") == again
        listed = http.get("/api/v1/jobs", params={"agent_id": agent["id"]}).json()["data"]
        assert first not in [j["job_id"] for j in listed]
        # Its events went with it.
        _assert_error(http.get(_stream_url(first)), 404, "NOT_FOUND", f"Job {first} not found")
