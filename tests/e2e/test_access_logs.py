"""Access lines per REST request and gRPC call, job lines per outcome, text or JSON.

In-process tests read the log records of a real shim and server; the JSON and silencing
tests run `agentq serve` as an operator would and read what it writes to stderr.
"""

from __future__ import annotations

import json
import logging
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentq.v1 import job_pb2
from server.auth.tokens import mint_token
from server.settings import Settings
from tests.e2e.cli_helpers import SECRET, clean_env, free_port
from tests.e2e.harness import (
    RestThread,
    ServeProcess,
    ServerThread,
    WorkerProcess,
    running_server,
    token,
)
from tests.log_lines import JSON_LINE_FIELDS
from tests.processes import agentq_command, popen

HTTP_FIELDS = ("protocol", "method", "route", "status", "request_id", "tenant")
GRPC_FIELDS = ("protocol", "rpc", "code", "request_id", "tenant")
AGENT = {"name": "logged", "role": "You answer briefly."}


@pytest.fixture(autouse=True)
def _access_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentq.access")


def _access_lines(
    caplog: pytest.LogCaptureFixture, request_id: str, *, expect: int
) -> list[logging.LogRecord]:
    """The access records of one request id, once `expect` of them have been logged.

    The REST line is written once the response is sent, so it may trail the response.
    """
    deadline = time.monotonic() + 5
    while True:
        found = [
            r
            for r in caplog.records
            if r.name == "agentq.access" and getattr(r, "request_id", None) == request_id
        ]
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def _extra(record: logging.LogRecord, name: str) -> object:
    """A field the logger set on the record (its `extra`), which LogRecord does not declare."""
    return record.__dict__[name]


def _text(record: logging.LogRecord, name: str) -> str:
    value = _extra(record, name)
    assert isinstance(value, str), (name, value)
    return value


def _duration_ms(record: logging.LogRecord) -> float:
    value = _extra(record, "duration_ms")
    assert isinstance(value, float), value
    return value


def _fields(record: logging.LogRecord, names: tuple[str, ...]) -> dict[str, object]:
    return {name: _extra(record, name) for name in names}


def _by_protocol(records: list[logging.LogRecord]) -> dict[str, logging.LogRecord]:
    protocols = [_text(r, "protocol") for r in records]
    assert sorted(protocols) == sorted(set(protocols)), protocols  # one line each
    return dict(zip(protocols, records, strict=True))


def test_a_rest_request_logs_one_http_line_and_its_rpc_one_grpc_line(
    rest: RestThread, caplog: pytest.LogCaptureFixture
) -> None:
    response = httpx.post(
        rest.url + "/api/v1/agents",
        json=AGENT,
        headers={"Authorization": f"Bearer {token('alice', tenant='acme')}", "X-Request-ID": "r-1"},
        timeout=10,
    )
    assert response.status_code == 201

    lines = _by_protocol(_access_lines(caplog, "r-1", expect=2))

    http, grpc_line = lines["http"], lines["grpc"]
    assert _fields(http, HTTP_FIELDS) == {
        "protocol": "http",
        "method": "POST",
        "route": "/api/v1/agents",
        "status": 201,
        "request_id": "r-1",
        "tenant": "acme",
    }
    assert _fields(grpc_line, GRPC_FIELDS) == {
        "protocol": "grpc",
        "rpc": "/agentq.v1.AgentService/CreateAgent",
        "code": "OK",
        "request_id": "r-1",
        "tenant": "acme",
    }
    for record in (http, grpc_line):
        assert _duration_ms(record) >= 0
        assert record.levelname == "INFO"
    ms = _duration_ms(http)
    assert http.getMessage() == f"http POST /api/v1/agents 201 {ms:.1f}ms tenant=acme"
    ms = _duration_ms(grpc_line)
    assert grpc_line.getMessage() == (
        f"grpc /agentq.v1.AgentService/CreateAgent OK {ms:.1f}ms tenant=acme"
    )


def test_a_fast_lane_request_names_its_route_template_and_an_error_keeps_the_tenant(
    rest: RestThread, caplog: pytest.LogCaptureFixture
) -> None:
    missing = str(uuid.uuid4())
    response = httpx.get(
        f"{rest.url}/api/v1/jobs/{missing}",
        headers={"Authorization": f"Bearer {token('bob', tenant='acme')}", "X-Request-ID": "r-2"},
        timeout=10,
    )
    assert response.status_code == 404

    lines = _by_protocol(_access_lines(caplog, "r-2", expect=2))

    assert _fields(lines["http"], HTTP_FIELDS) == {
        "protocol": "http",
        "method": "GET",
        "route": "/api/v1/jobs/{job_id}",
        "status": 404,
        "request_id": "r-2",
        "tenant": "acme",
    }
    assert _fields(lines["grpc"], GRPC_FIELDS) == {
        "protocol": "grpc",
        "rpc": "/agentq.v1.JobService/GetJob",
        "code": "NOT_FOUND",
        "request_id": "r-2",
        "tenant": "acme",
    }


def test_a_request_without_credentials_is_logged_with_no_tenant(
    rest: RestThread, caplog: pytest.LogCaptureFixture
) -> None:
    response = httpx.get(rest.url + "/api/v1/agents", headers={"X-Request-ID": "r-3"}, timeout=10)
    assert response.status_code == 401

    lines = _by_protocol(_access_lines(caplog, "r-3", expect=2))

    http, grpc_line = lines["http"], lines["grpc"]
    assert (_extra(http, "status"), _extra(http, "tenant")) == (401, "-")
    assert (_extra(grpc_line, "code"), _extra(grpc_line, "tenant")) == (
        "UNAUTHENTICATED",
        "-",
    )


def test_an_unknown_route_is_logged_with_its_path_and_without_its_query(
    rest: RestThread, caplog: pytest.LogCaptureFixture
) -> None:
    response = httpx.get(rest.url + "/no/such%0Aroute?secret=1", headers={"X-Request-ID": "r-4"})
    assert response.status_code == 404

    [line] = _access_lines(caplog, "r-4", expect=1)

    assert _fields(line, HTTP_FIELDS) == {
        "protocol": "http",
        "method": "GET",
        "route": "/no/such%0Aroute",
        "status": 404,
        "request_id": "r-4",
        "tenant": "-",
    }


def test_a_direct_grpc_call_logs_its_line_with_the_request_id_it_sent(
    embedded: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    with embedded.client(token("carol", tenant="globex")) as client:
        agent = client.create_agent()
        client.get_agent(agent.id)  # no request id sent: the server makes one

    records = [r for r in caplog.records if getattr(r, "rpc", "").endswith("/GetAgent")]

    [line] = records
    assert (_extra(line, "code"), _extra(line, "tenant")) == ("OK", "globex")
    uuid.UUID(_text(line, "request_id"))


def test_a_malformed_request_uvicorn_refuses_is_logged_as_a_400(
    rest: RestThread, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.e2e.test_hardening import MALFORMED, _raw_exchange

    _, headers, _ = _raw_exchange(rest.port, MALFORMED["bad-request-line"])

    [line] = _access_lines(caplog, headers["x-request-id"], expect=1)
    assert _fields(line, HTTP_FIELDS) == {
        "protocol": "http",
        "method": "-",
        "route": "-",
        "status": 400,
        "request_id": headers["x-request-id"],
        "tenant": "-",
    }


# --- agentq serve, as an operator runs it --------------------------------------------------


def _serve(tmp_path: Path, **settings: str) -> Iterator[tuple[ServeProcess, str]]:
    """`agentq serve` with `settings` on free ports; it and its REST URL, stopped after."""
    http_port = free_port()
    env = clean_env(
        VEX_JWT_SECRET=SECRET,
        AGENTQ_GRPC_ADDR=f"127.0.0.1:{free_port()}",
        AGENTQ_HTTP_ADDR=f"127.0.0.1:{http_port}",
        AGENTQ_DATABASE_URL=f"sqlite:///{tmp_path / 'logs.db'}",
        AGENTQ_BUILTIN_LATENCY_MS="0",
        **settings,
    )
    process = popen(agentq_command("serve"), env=env, cwd=tmp_path, merge_stderr=False)
    serve = ServeProcess(process).start_reading()
    try:
        serve.wait_listening()
        url = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield serve, url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)


def _run_one_job(url: str) -> str:
    """Create an agent, execute it over REST and wait until the job completed; its id."""
    auth = {"Authorization": f"Bearer {mint_token(secret=SECRET, subject='acme', role='user')}"}
    agent = httpx.post(url + "/api/v1/agents", json=AGENT, headers=auth, timeout=10).json()
    ack = httpx.post(
        f"{url}/api/v1/agents/{agent['id']}/execute",
        json={"prompt": "Say hi."},
        headers={**auth, "X-Request-ID": "json-1"},
        timeout=10,
    ).json()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/api/v1/jobs/{ack['job_id']}", headers=auth, timeout=10).json()
        if job["status"] == "completed":
            return str(ack["job_id"])
        time.sleep(0.05)
    raise AssertionError(f"job {ack['job_id']} did not complete: {job}")


def _stderr_after_stop(serve: ServeProcess) -> list[str]:
    serve.process.send_signal(signal.SIGTERM)
    serve.process.wait(timeout=15)
    time.sleep(0.2)  # the reader thread takes the last lines
    return "".join(serve.stderr).splitlines()


def test_with_the_json_format_every_line_is_one_object_with_the_fields_as_keys(
    tmp_path: Path,
) -> None:
    for serve, url in _serve(tmp_path, AGENTQ_LOG_FORMAT="json"):
        job_id = _run_one_job(url)
        lines = _stderr_after_stop(serve)

    entries = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    http = [e for e in entries if e.get("protocol") == "http" and e["request_id"] == "json-1"]
    grpc_entries = [
        e for e in entries if e.get("protocol") == "grpc" and e["request_id"] == "json-1"
    ]
    jobs = [e for e in entries if e["logger"] == "agentq.jobs"]

    [line] = http
    assert set(line) == JSON_LINE_FIELDS | {
        "protocol",
        "method",
        "route",
        "status",
        "duration_ms",
        "tenant",
    }
    assert (line["logger"], line["level"], line["method"], line["route"]) == (
        "agentq.access",
        "INFO",
        "POST",
        "/api/v1/agents/{agent_id}/execute",
    )
    assert (line["status"], line["tenant"]) == (202, "acme")
    [grpc_line] = grpc_entries
    assert (grpc_line["rpc"], grpc_line["code"], grpc_line["tenant"]) == (
        "/agentq.v1.AgentService/Execute",
        "OK",
        "acme",
    )
    [job_line] = jobs
    assert set(job_line) == JSON_LINE_FIELDS | {
        "job_id",
        "outcome",
        "attempts",
        "duration_ms",
        "error",
    }
    assert (job_line["job_id"], job_line["outcome"], job_line["attempts"]) == (
        job_id,
        "completed",
        1,
    )
    assert job_line["error"] is None
    assert isinstance(job_line["duration_ms"], float)


def test_raising_the_access_loggers_level_silences_access_lines_only(tmp_path: Path) -> None:
    levels = "agentq.access=WARNING,agentq.jobs=WARNING"
    for serve, url in _serve(tmp_path, AGENTQ_LOG_LEVELS=levels):
        _run_one_job(url)
        lines = _stderr_after_stop(serve)

    assert not [line for line in lines if " agentq.access " in line or " agentq.jobs " in line]
    assert any(" INFO server.cli.serve " in line for line in lines), lines


def test_every_worker_process_logs_the_jobs_it_ran(scaled_settings: Settings) -> None:
    # Two processes, the parent and a spawned child (which sets up logging itself), with
    # two slots each and jobs slow enough that both must run some.
    settings = scaled_settings.model_copy(update={"builtin_latency_ms": 200})
    with running_server(settings, in_process_workers=False) as server:
        worker = WorkerProcess(settings, processes=2, concurrency=2)
        try:
            deadline = time.monotonic() + 30
            while worker.output.count("agentq worker ready") < 2:
                assert time.monotonic() < deadline, worker.output
                time.sleep(0.05)
            with server.client(token("dave", tenant="initech")) as client:
                agent = client.create_agent()
                job_ids = [client.execute(agent.id, f"question {n}").job_id for n in range(16)]
                for job_id in job_ids:
                    assert client.wait_finished(job_id).status == job_pb2.JOB_STATUS_COMPLETED
        finally:
            worker.stop()

    lines = [line for line in worker.output.splitlines() if " INFO agentq.jobs " in line]
    logged = {line.split(" job ", 1)[1].split()[0] for line in lines}
    assert logged == set(job_ids)
    assert all(" completed attempts=1 " in line for line in lines)
