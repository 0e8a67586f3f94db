"""What the REST tests share: HTTP helpers, Server-Sent Events, and the pieces they run
(servers, shims, worker and server processes)."""

from __future__ import annotations

import json
import re
import time
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
    ServeProcess,
    ServerThread,
    WorkerProcess,
    running_rest,
    running_server,
    settings_for,
    token,
)
from tests.processes import stop_all

FINISHED = ("completed", "failed", "cancelled")
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMEOUT_S = 15
KEEP_ALIVE = ": keep-alive"
# The events of one builtin run with a latency: it answers in four pieces.
STREAMED_RUN = ["queued", "started", "token", "token", "token", "token", "completed"]
LONG_PROMPT = "Explain in plain words how a queue hands work to many workers"


# --- HTTP helpers ----------------------------------------------------------------------------


def http_client(base_url: str, bearer: str) -> httpx.Client:
    """A client of one REST shim carrying a caller's token."""
    headers = {"Authorization": f"Bearer {bearer}"}
    return httpx.Client(base_url=base_url, headers=headers, timeout=TIMEOUT_S)


@contextmanager
def alice_and_bob(rest: RestThread) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Clients of one shim for users of two tenants, alice and bob."""
    with (
        http_client(rest.url, token("alice")) as alice,
        http_client(rest.url, token("bob")) as bob,
    ):
        yield alice, bob


def create_agent(http: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"name": "worker-bee", "role": "You are a careful assistant.", **fields}
    response = http.post("/api/v1/agents", json=body)
    assert response.status_code == 201, response.text
    agent: dict[str, Any] = response.json()
    return agent


def execute(
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


def submit(http: httpx.Client, agent_id: str, prompt: str = "What is 2+2?", **extra: Any) -> str:
    """Queue an execution; the id of the acknowledged job."""
    response = execute(http, agent_id, prompt, **extra)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    assert response.json()["response"] == f"Job queued: {job_id}"
    return job_id


def get_job(http: httpx.Client, job_id: str) -> dict[str, Any]:
    response = http.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def wait_for(
    http: httpx.Client, job_id: str, statuses: tuple[str, ...], *, timeout_s: float = 30
) -> dict[str, Any]:
    """Poll the job until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = get_job(http, job_id)
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout_s}s"
        time.sleep(0.02)


def wait_running(http: httpx.Client, job_id: str) -> None:
    job = wait_for(http, job_id, ("running", *FINISHED), timeout_s=20)
    assert job["status"] == "running", job


def cancel(http: httpx.Client, job_id: str) -> dict[str, Any]:
    response = http.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def assert_error(response: httpx.Response, status: int, code: str, message: str) -> None:
    """The contract's error body, with `message` as the error's text."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == {"code": code, "message": message, "status": status}, body
    if isinstance(body["detail"], str):
        assert body["detail"] == message
    else:
        assert body["detail"][0]["msg"] == message


def stays(http: httpx.Client, job_id: str, status: str, *, until: float) -> dict[str, Any]:
    """Poll until the monotonic time `until`, asserting the job keeps `status`."""
    while True:
        job = get_job(http, job_id)
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


def sse(response: httpx.Response) -> Iterator[Event | str]:
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


def stream_url(job_id: str) -> str:
    return f"/api/v1/jobs/{job_id}/stream"


def read_stream(
    http: httpx.Client, job_id: str, *, last_event_id: int | None = None
) -> list[Event]:
    """Every event of a stream, read until the server ends it."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    with http.stream("GET", stream_url(job_id), headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return [item for item in sse(response) if isinstance(item, Event)]


def assert_well_formed(events: list[Event], job_id: str) -> None:
    for event in events:
        assert event.data["job_id"] == job_id
        assert event.data["sequence"] == event.id
        assert event.data["type"] == event.name


# --- Running the pieces ----------------------------------------------------------------------


@contextmanager
def scaled_rest(
    settings: Settings, **rest_overrides: Any
) -> Iterator[tuple[ServerThread, RestThread]]:
    """A gRPC server without workers on PostgreSQL + Redis, and a REST shim in front of it."""
    with (
        running_server(settings, in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}", **rest_overrides) as rest,
    ):
        yield server, rest


@contextmanager
def worker_processes(settings: Settings, *, count: int = 2, concurrency: int = 2) -> Iterator[None]:
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
        stop_all(started)


def with_latency(settings: Settings, latency_s: float) -> Settings:
    """The settings with a builtin provider that takes `latency_s` to answer."""
    return settings.model_copy(update={"builtin_latency_ms": int(latency_s * 1000)})


@contextmanager
def scaled_stack(
    settings: Settings, *, count: int = 2, concurrency: int = 2
) -> Iterator[tuple[ServerThread, httpx.Client]]:
    """scaled_rest with `count` worker processes, and a client of its shim for alice."""
    with (
        scaled_rest(settings) as (server, rest),
        worker_processes(settings, count=count, concurrency=concurrency),
        http_client(rest.url, token()) as http,
    ):
        yield server, http


@contextmanager
def embedded_rest(tmp_path: Path, **overrides: Any) -> Iterator[tuple[ServerThread, RestThread]]:
    """The embedded default (SQLite, in-process workers) and a REST shim in front of it."""
    settings = settings_for(database_url=f"sqlite:///{tmp_path / 'agentq.db'}", **overrides)
    with (
        running_server(settings, in_process_workers=True) as server,
        running_rest(f"127.0.0.1:{server.port}") as rest,
    ):
        yield server, rest


@contextmanager
def serve_processes(settings: Settings, count: int) -> Iterator[list[ServeProcess]]:
    """`count` server processes on the same database and broker, started side by side."""
    processes: list[ServeProcess] = []
    try:
        processes.extend(ServeProcess.replica(settings).start_reading() for _ in range(count))
        for process in processes:
            process.wait_rest()
        yield processes
    finally:
        stop_all(processes)


def count_rows(engine: Engine, model: type[Job] | type[IdempotencyKey], *where: Any) -> int:
    with engine.connect() as connection:
        query = select(func.count()).select_from(model).where(*where)
        return int(connection.execute(query).scalar_one())
