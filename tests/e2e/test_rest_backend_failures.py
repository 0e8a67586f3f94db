"""The shim when what is behind it fails: backend down, a silent backend, the database gone.

Also `agentq rest` run alone, as an operator scales it: up, serving, and stopped by SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from server.settings import Settings
from server.store.models import Job
from tests.e2e.database_outage import database_down
from tests.e2e.harness import ServerThread, running_rest, running_server, token
from tests.tcp_server import tcp_server

VALID_AGENT = {"name": "helper", "role": "You are a helpful assistant."}
QUICK_S = 5
START_TIMEOUT_S = 20
STOP_TIMEOUT_S = 15
POLL_TIMEOUT_S = 30


def _assert_error(response: httpx.Response, status: int, code: str, message: str | None) -> None:
    """The error body of docs/contract.md §2."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"detail", "error"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["status"] == status, body
    assert body["detail"] == body["error"]["message"], body
    if message is not None:
        assert body["error"]["message"] == message, body
    assert response.headers.get("x-request-id"), response.headers


def _timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def _free_port() -> int:
    """A TCP port that nothing was listening on a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _silent_backend() -> Iterator[str]:
    """A TCP server that accepts connections and never says a word; yields its address."""

    def hold(connection: socket.socket, stopping: threading.Event) -> None:
        with connection:
            stopping.wait()

    with tcp_server(hold) as port:
        yield f"127.0.0.1:{port}"


def test_a_backend_that_is_down_is_503_quickly_never_500(tmp_path: Path) -> None:
    bearer = {"Authorization": f"Bearer {token()}"}
    with (
        running_rest(f"127.0.0.1:{_free_port()}") as shim,
        httpx.Client(base_url=shim.url, timeout=30) as http,
    ):
        # Twice each: the channel's reconnect backoff must not turn into a hang either.
        for _ in range(2):
            health, took = _timed(lambda: http.get("/health"))
            _assert_error(health, 503, "SERVICE_UNAVAILABLE", "Service unavailable")
            assert took < QUICK_S
            created, took = _timed(
                lambda: http.post("/api/v1/agents", json=VALID_AGENT, headers=bearer)
            )
            _assert_error(created, 503, "SERVICE_UNAVAILABLE", "Service unavailable")
            assert took < QUICK_S


def test_a_backend_that_never_answers_is_504_at_the_deadline() -> None:
    bearer = {"Authorization": f"Bearer {token()}"}
    with (
        _silent_backend() as target,
        running_rest(target, rest_timeout_s=0.5) as shim,
        httpx.Client(base_url=shim.url, timeout=30) as http,
    ):
        health, took = _timed(lambda: http.get("/health"))
        _assert_error(health, 504, "TIMEOUT", "Request timed out")
        assert took < QUICK_S
        created, took = _timed(
            lambda: http.post("/api/v1/agents", json=VALID_AGENT, headers=bearer)
        )
        _assert_error(created, 504, "TIMEOUT", "Request timed out")
        assert took < QUICK_S


def _jobs(server: ServerThread) -> int:
    with server.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(Job)).scalar_one())


def test_a_database_outage_is_503_and_the_service_returns_with_the_database(
    scaled_settings: Settings,
) -> None:
    bearer = {"Authorization": f"Bearer {token()}"}
    with (
        running_server(scaled_settings, in_process_workers=False) as server,
        running_rest(f"127.0.0.1:{server.port}") as shim,
        httpx.Client(base_url=shim.url, timeout=30, headers=bearer) as http,
    ):
        created = http.post("/api/v1/agents", json=VALID_AGENT)
        assert created.status_code == 201, created.text
        agent = created.json()
        with database_down(scaled_settings.database_url):
            read = http.get(f"/api/v1/agents/{agent['id']}")
            health = http.get("/health")
            executed = http.post(f"/api/v1/agents/{agent['id']}/execute", json={"prompt": "hi"})
        _assert_error(read, 503, "SERVICE_UNAVAILABLE", "Database unavailable")
        _assert_error(health, 503, "SERVICE_UNAVAILABLE", None)
        _assert_error(executed, 503, "SERVICE_UNAVAILABLE", "Database unavailable")

        # Once the database is back, so is the service; the refused execution left no job.
        again = http.get(f"/api/v1/agents/{agent['id']}")
        assert again.status_code == 200, again.text
        assert again.json() == agent
        healthy = http.get("/health")
        assert healthy.status_code == 200, healthy.text
        assert healthy.json()["status"] == "healthy"
        assert _jobs(server) == 0


def _wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert process.poll() is None, "agentq rest exited:\n" + log.read_text()
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"agentq rest not healthy in {START_TIMEOUT_S}s:\n{log.read_text()}"
            )
        time.sleep(0.1)


def test_agentq_rest_serves_the_flow_alone_and_stops_cleanly_on_sigterm(
    embedded: ServerThread, tmp_path: Path
) -> None:
    port = _free_port()
    # The shim checks no token itself, so it runs without VEX_JWT_SECRET.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AGENTQ_") and k != "VEX_JWT_SECRET"
    }
    env["AGENTQ_HTTP_ADDR"] = f"127.0.0.1:{port}"
    env["AGENTQ_GRPC_TARGET"] = f"127.0.0.1:{embedded.port}"
    log = tmp_path / "rest.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "rest"],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(url, process, log)
        with httpx.Client(
            base_url=url, timeout=10, headers={"Authorization": f"Bearer {token()}"}
        ) as http:
            created = http.post("/api/v1/agents", json=VALID_AGENT)
            assert created.status_code == 201, created.text
            acked = http.post(
                f"/api/v1/agents/{created.json()['id']}/execute", json={"prompt": "hi"}
            )
            assert acked.status_code == 202, acked.text
            job_id = acked.json()["job_id"]
            deadline = time.monotonic() + POLL_TIMEOUT_S
            while (job := http.get(f"/api/v1/jobs/{job_id}").json())["status"] in (
                "pending",
                "running",
            ):
                assert time.monotonic() < deadline, job
                time.sleep(0.05)
            assert job["status"] == "completed", job
            assert job["result"]["job_id"] == job_id

        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"agentq rest still running {STOP_TIMEOUT_S}s after SIGTERM:\n{log.read_text()}"
            ) from None
        assert code == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
