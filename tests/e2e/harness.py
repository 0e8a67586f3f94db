"""Real agentq processes for end-to-end tests: a gRPC server on port 0, workers, clients."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from agentq.v1 import agent_service_pb2 as agents_pb
from agentq.v1 import agent_service_pb2_grpc as agents_grpc
from agentq.v1 import job_pb2
from agentq.v1 import job_service_pb2 as jobs_pb
from agentq.v1 import job_service_pb2_grpc as jobs_grpc
from server.api.server import RunningServer, start_grpc_server
from server.auth.tokens import mint_token
from server.bootstrap import Runtime, build_runtime
from server.settings import Settings
from server.store.migrate import create_db_engine
from tests.processes import ChildProcess, agentq_command, popen

SECRET = "e2e-secret-long-enough-for-every-hmac-size-0123456789abcdef0123456789"
FINISHED = (job_pb2.JOB_STATUS_COMPLETED, job_pb2.JOB_STATUS_FAILED, job_pb2.JOB_STATUS_CANCELLED)


def settings_for(**overrides: Any) -> Settings:
    """Test settings: fixed secret, a free port, fast timings; overrides win."""
    values: dict[str, Any] = {
        "jwt_secret": SECRET,
        "grpc_addr": "127.0.0.1:0",
        "builtin_latency_ms": 0,
        "recovery_interval_s": 0.5,
        "retry_backoff_s": 0.1,
        "db_pool_size": 8,
        "worker_concurrency": 32,
        # A server stopped at a test's end gives its running jobs back soon.
        "shutdown_grace_s": 2,
        # Every streamed piece is its own token event, so tests can count them;
        # coalescing has tests of its own (test_engine.py).
        "token_event_interval_ms": 0,
        # Tests send bursts far beyond a real client's; rate limits have their own tests.
        "default_tier": "unlimited",
        # Tests send bad credentials by the hundred from one address; the throttle of
        # failed checks has its own tests (test_failed_credentials.py).
        "auth_failure_burst": 1_000_000,
        # No metrics endpoint: test processes would all want the default port; the
        # metrics have their own tests (test_metrics*.py).
        "metrics_addr": "",
    }
    values.update(overrides)
    return Settings(**values)


def env_for(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTQ_")}
    secrets = {
        name for name, value in settings.model_dump().items() if hasattr(value, "get_secret_value")
    }
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        if name in secrets:
            value = getattr(settings, name).get_secret_value()
        elif isinstance(value, dict | list):
            value = json.dumps(value)
        key = "VEX_JWT_SECRET" if name == "jwt_secret" else f"AGENTQ_{name.upper()}"
        env[key] = str(value)
    return env


def token(sub: str = "alice", *, role: str = "user", tenant: str | None = None) -> str:
    """A valid token for the test secret."""
    return mint_token(secret=SECRET, subject=sub, role=role, tenant_id=tenant)


def claims(**changes: object) -> dict[str, object]:
    """A valid claim set issued now; a change to None removes that claim."""
    now = int(time.time())
    made: dict[str, object] = {
        "sub": "alice",
        "role": "user",
        "iss": "vex-api",
        "iat": now,
        "exp": now + 600,
    }
    made.update(changes)
    return {k: v for k, v in made.items() if v is not None}


def signed(made: dict[str, object], *, secret: str = SECRET, alg: str = "HS256") -> str:
    """A JWT of exactly these claims, as pyjwt encodes them."""
    return jwt.encode(made, secret, algorithm=alg)


@dataclass
class Client:
    """Sync gRPC stubs with one caller's token."""

    channel: grpc.Channel
    bearer: str | None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return () if self.bearer is None else (("authorization", f"Bearer {self.bearer}"),)

    def create_agent(self, **fields: Any) -> Any:
        fields.setdefault("name", "helper")
        fields.setdefault("role", "You are a helpful assistant.")
        stub = agents_grpc.AgentServiceStub(self.channel)
        request = agents_pb.CreateAgentRequest(**fields)
        return stub.CreateAgent(request, metadata=self.metadata, timeout=10).agent

    def get_agent(self, agent_id: str) -> Any:
        stub = agents_grpc.AgentServiceStub(self.channel)
        request = agents_pb.GetAgentRequest(agent_id=agent_id)
        return stub.GetAgent(request, metadata=self.metadata, timeout=10).agent

    def execute(self, agent_id: str, prompt: str = "What is 2+2?", **fields: Any) -> Any:
        stub = agents_grpc.AgentServiceStub(self.channel)
        request = agents_pb.ExecuteRequest(agent_id=agent_id, prompt=prompt, **fields)
        return stub.Execute(request, metadata=self.metadata, timeout=10)

    def get_job(self, job_id: str) -> Any:
        stub = jobs_grpc.JobServiceStub(self.channel)
        return stub.GetJob(
            jobs_pb.GetJobRequest(job_id=job_id), metadata=self.metadata, timeout=10
        ).job

    def wait_finished(self, job_id: str, *, timeout_s: float = 30) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.get_job(job_id)
            if job.status in FINISHED:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job.status} after {timeout_s}s")
            time.sleep(0.02)


class ServerThread:
    """An agentq gRPC server (with its runtime) on its own event loop in a thread."""

    def __init__(self, settings: Settings, *, in_process_workers: bool) -> None:
        self.settings = settings
        self._in_process_workers = in_process_workers
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0
        self.runtime: Runtime

    def start(self) -> ServerThread:
        self.runtime = build_runtime(self.settings)
        # For tests that look at the rows themselves.
        self.engine = create_db_engine(self.settings.database_url, pool_size=2)
        if self._in_process_workers:
            self.runtime.start_workers()
        self.runtime.start_recovery()
        self._thread.start()
        self._server: RunningServer = self._call(self._start_grpc())
        self.port = self._server.port
        return self

    async def _start_grpc(self) -> RunningServer:
        services = await self.runtime.open_services()
        return await start_grpc_server(
            self.settings, services, secret=SECRET, address=self.settings.grpc_addr
        )

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    @contextmanager
    def client(self, bearer: str | None = None) -> Iterator[Client]:
        channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        try:
            yield Client(channel, bearer)
        finally:
            channel.close()

    def stop(self) -> None:
        self._call(self._server.stop(grace=1))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self.runtime.close()
        self.engine.dispose()


@contextmanager
def running_server(settings: Settings, *, in_process_workers: bool) -> Iterator[ServerThread]:
    """A started ServerThread, stopped on exit."""
    server = ServerThread(settings, in_process_workers=in_process_workers).start()
    try:
        yield server
    finally:
        server.stop()


class WorkerProcess(ChildProcess):
    """`agentq worker` in a child process, as an operator would run it."""

    def __init__(
        self, settings: Settings, *, processes: int = 1, concurrency: int | None = None
    ) -> None:
        command = agentq_command("worker", "--processes", str(processes))
        if concurrency is not None:
            command += ["--concurrency", str(concurrency)]
        super().__init__(popen(command, env=env_for(settings)))
        self.start_reading()
        if self.wait_line("agentq worker ready", timeout_s=60) is None:
            self.stop()
            raise AssertionError("worker did not start:\n" + self.output)


class FakeLLMProcess(ChildProcess):
    """bench/fake_openai.py as its own process: an OpenAI-compatible server on loopback.

    Its own process, so that a thousand slow calls cost the test process nothing.
    """

    def __init__(self, *, delay_s: float, chunks: int = 4) -> None:
        command = [sys.executable, "-m", "bench.fake_openai", "--delay", str(delay_s)]
        super().__init__(popen([*command, "--chunks", str(chunks)], merge_stderr=False))
        line = self.start_reading().wait_line(timeout_s=30)
        if line is None or "listening on port" not in line:
            self.stop(timeout_s=10)
            raise AssertionError(f"the fake provider did not start: {line!r}\n{self.output}")
        self.base_url = f"http://127.0.0.1:{int(line.rsplit(' ', 1)[1])}/v1"

    def stats(self) -> dict[str, Any]:
        """Its counters: calls, in_flight, peak_in_flight, completed, disconnects, ..."""
        stats: dict[str, Any] = httpx.get(self.base_url.removesuffix("/v1") + "/stats").json()
        return stats


@contextmanager
def fake_llm_process(*, delay_s: float, chunks: int = 4) -> Iterator[FakeLLMProcess]:
    """A started FakeLLMProcess, stopped on exit."""
    fake = FakeLLMProcess(delay_s=delay_s, chunks=chunks)
    try:
        yield fake
    finally:
        fake.stop(timeout_s=10)


class RestThread:
    """The REST shim under uvicorn on a free port, in its own thread, calling `grpc_target`."""

    def __init__(self, grpc_target: str, *, tracer_provider: Any = None, **overrides: Any) -> None:
        from rest_shim.serving import http_server
        from rest_shim.settings import RestSettings

        settings = RestSettings(http_addr="127.0.0.1:0", grpc_target=grpc_target, **overrides)
        self._server = http_server(settings, embedded=True, tracer_provider=tracer_provider)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> RestThread:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise AssertionError("the REST shim did not start")
            time.sleep(0.01)
        self.port = self._server.port  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)


@contextmanager
def running_rest(grpc_target: str, **overrides: Any) -> Iterator[RestThread]:
    """A started RestThread, stopped on exit."""
    rest = RestThread(grpc_target, **overrides).start()
    try:
        yield rest
    finally:
        rest.stop()


def rpc_error(call: grpc.RpcError) -> tuple[grpc.StatusCode, str, str, list[tuple[str, str]]]:
    """Code, message, ErrorInfo reason and BadRequest violations of a failed call."""
    status = rpc_status.from_call(call)  # type: ignore[arg-type]
    assert status is not None, "the error carries no google.rpc.Status"
    reason, violations = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "agentq"
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [(v.field, v.description) for v in bad.field_violations]
    return call.code(), call.details() or "", reason, violations


# How long `agentq serve` may take to say its gRPC server listens, and its REST shim.
SERVE_START_TIMEOUT_S = 30
REPLICA_START_TIMEOUT_S = 60
REST_LISTENING = re.compile(r"agentq REST listening on port (\d+)")


class ServeProcess(ChildProcess):
    """`agentq serve` (gRPC and REST) in a child process, with its output read as it comes."""

    url = ""

    @classmethod
    def replica(cls, settings: Settings, cwd: Path | None = None) -> ServeProcess:
        """Another replica on the stores of `settings`, on free ports; see wait_rest()."""
        settings = settings.model_copy(
            update={"grpc_addr": "127.0.0.1:0", "http_addr": "127.0.0.1:0"}
        )
        command = agentq_command("serve")
        return cls(popen(command, env=env_for(settings), cwd=cwd, merge_stderr=False))

    def wait_listening(self) -> str:
        """The "listening" line, or an AssertionError with everything printed so far."""
        line = self.wait_line("agentq gRPC listening on port", timeout_s=SERVE_START_TIMEOUT_S)
        if line is None:
            raise AssertionError(f"agentq serve did not start:\n{self.output}")
        return line

    def wait_rest(self) -> str:
        """The REST shim's URL once it listens; stopped, and an AssertionError, if it never does."""
        line = self.wait_line(REST_LISTENING, timeout_s=REPLICA_START_TIMEOUT_S)
        found = None if line is None else REST_LISTENING.search(line)
        if found is None:
            self.stop()
            raise AssertionError(f"agentq serve did not start:\n{self.output}")
        self.url = f"http://127.0.0.1:{found.group(1)}"
        return self.url

    def wait_stderr(self, pattern: re.Pattern[str]) -> str:
        """All of stderr once `pattern` matches it: stdout and stderr are read by separate
        threads, so a line on one can be seen before an earlier line on the other."""
        return self.wait_text(pattern, stream="stderr", timeout_s=SERVE_START_TIMEOUT_S)


@contextmanager
def serve_process(settings: Settings, cwd: Path) -> Iterator[ServeProcess]:
    """A replica (ServeProcess.replica) whose REST shim listens, stopped on exit."""
    process = ServeProcess.replica(settings, cwd).start_reading()
    try:
        process.wait_rest()
        yield process
    finally:
        process.stop(timeout_s=20)
