"""agentq as the harness runs it: `agentq serve` and `agentq worker` processes, and a client.

The harness treats agentq as a black box: it starts the console script with
environment variables, reads the ports it prints, and talks to it over the wire with
the stubs generated from proto/ (the public contract).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import grpc.aio

from agentq.v1 import agent_service_pb2, job_pb2, job_service_pb2
from bench.grpcwire import GrpcCall, Metadata, bearer
from bench.loadgen import HttpCall
from bench.procs import ManagedProcess, ProcessSet

if TYPE_CHECKING:
    # An asyncio unary method sending and receiving raw bytes (no serializers).
    AsyncRawMethod = grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]

EXECUTE_PATH = "/agentq.v1.AgentService/Execute"
CREATE_AGENT_PATH = "/agentq.v1.AgentService/CreateAgent"
GET_JOB_PATH = "/agentq.v1.JobService/GetJob"
PROMPT = "Summarize the benefits of queue-based agent execution."
ROLE = "You are a concise research assistant."
SUBJECT = "bench"
GRPC_READY = r"agentq gRPC listening on port (\d+)"
REST_READY = r"agentq REST listening on port (\d+)"
WORKER_READY = r"agentq worker ready"
START_TIMEOUT_S = 120.0


def agentq_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any agentq setting, plus `settings`.

    Metrics are off unless `settings` ask for them: processes started side by side would
    otherwise all want the default metrics port.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AGENTQ_") and key != "VEX_JWT_SECRET"
    }
    env["AGENTQ_METRICS_ADDR"] = ""
    env.update(settings)
    return env


def run_cli(agentq: str, args: list[str], env: Mapping[str, str]) -> str:
    """Run an agentq command to completion and return what it printed."""
    done = subprocess.run(
        [agentq, *args], env=dict(env), capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"agentq {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip()


@dataclass
class Server:
    """A running `agentq serve` and its two ports."""

    process: ManagedProcess
    grpc_port: int
    rest_port: int


def start_server(
    procs: ProcessSet, agentq: str, env: Mapping[str, str], name: str, *, rest: bool = True
) -> Server:
    """Start `agentq serve` on free loopback ports and wait until its faces listen.

    Without `rest` the server runs gRPC only (`--no-rest`) and its REST port is 0.
    """
    process = procs.start(name, [agentq, "serve", *([] if rest else ["--no-rest"])], env=env)
    grpc_port = process.wait_for_port(GRPC_READY, timeout_s=START_TIMEOUT_S)
    rest_port = process.wait_for_port(REST_READY, timeout_s=START_TIMEOUT_S) if rest else 0
    return Server(process, grpc_port, rest_port)


def start_workers(
    procs: ProcessSet,
    agentq: str,
    env: Mapping[str, str],
    name: str,
    *,
    processes: int,
    concurrency: int,
) -> ManagedProcess:
    """Start `agentq worker` and wait until each of its processes is ready."""
    argv = [agentq, "worker", "--processes", str(processes), "--concurrency", str(concurrency)]
    process = procs.start(name, argv, env=env)
    process.wait_for(WORKER_READY, count=processes, timeout_s=START_TIMEOUT_S)
    return process


class Client:
    """One user of a running server: the calls the workloads make, as GrpcCall/HttpCall."""

    def __init__(self, server: Server, token: str) -> None:
        self.server = server
        self.token = token
        self.metadata: Metadata = bearer(token)

    def _call(self, path: str, request: bytes) -> GrpcCall:
        return GrpcCall(self.server.grpc_port, path, request, self.metadata)

    def create_agent(self, name: str) -> str:
        """A new agent's id."""
        request = agent_service_pb2.CreateAgentRequest(name=name, role=ROLE)
        reply = self._call(CREATE_AGENT_PATH, request.SerializeToString()).invoke()
        return agent_service_pb2.CreateAgentResponse.FromString(reply).agent.id

    def execute_call(self, agent_id: str) -> GrpcCall:
        """Execute over gRPC: queue the benchmark prompt for the agent."""
        request = agent_service_pb2.ExecuteRequest(agent_id=agent_id, prompt=PROMPT)
        return self._call(EXECUTE_PATH, request.SerializeToString())

    def get_job_call(self, job_id: str) -> GrpcCall:
        """GetJob over gRPC."""
        request = job_service_pb2.GetJobRequest(job_id=job_id)
        return self._call(GET_JOB_PATH, request.SerializeToString())

    def execute(self, agent_id: str) -> str:
        """Queue one execution; the job id."""
        reply = self.execute_call(agent_id).invoke()
        return agent_service_pb2.ExecuteResponse.FromString(reply).job_id

    def execute_many(self, agent_id: str, prompts: Sequence[str], *, in_flight: int) -> list[str]:
        """Queue one execution per prompt, `in_flight` calls at a time; the job ids.

        Each call must answer OK (a failure raises grpc.RpcError and ends the run).
        """
        return asyncio.run(self._execute_many(agent_id, prompts, in_flight))

    async def _execute_many(
        self, agent_id: str, prompts: Sequence[str], in_flight: int
    ) -> list[str]:
        pending = iter(enumerate(prompts))
        job_ids = [""] * len(prompts)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.server.grpc_port}") as channel:
            method: AsyncRawMethod = channel.unary_unary(EXECUTE_PATH)

            async def send() -> None:
                # One event loop: the shared iterator hands each prompt to one sender.
                for index, prompt in pending:
                    request = agent_service_pb2.ExecuteRequest(agent_id=agent_id, prompt=prompt)
                    reply = await method(
                        request.SerializeToString(), metadata=self.metadata, timeout=60
                    )
                    job_ids[index] = agent_service_pb2.ExecuteResponse.FromString(reply).job_id

            await asyncio.gather(*(send() for _ in range(in_flight)))
        return job_ids

    def wait_completed(self, job_id: str, *, timeout_s: float = 60.0) -> None:
        """Poll GetJob until the job has completed; raise if it fails or takes too long."""
        call = self.get_job_call(job_id)
        deadline = time.monotonic() + timeout_s
        while True:
            job = job_service_pb2.GetJobResponse.FromString(call.invoke()).job
            if job.status == job_pb2.JOB_STATUS_COMPLETED:
                return
            if job.status in (job_pb2.JOB_STATUS_FAILED, job_pb2.JOB_STATUS_CANCELLED):
                raise RuntimeError(f"job {job_id} ended {job_pb2.JobStatus.Name(job.status)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not completed in {timeout_s:g}s")
            time.sleep(0.05)

    def rest_url(self, path: str) -> str:
        """A URL on the server's REST face."""
        return f"http://127.0.0.1:{self.server.rest_port}{path}"

    def rest_headers(self) -> tuple[str, ...]:
        """The headers every REST call of the benchmark sends."""
        return (f"Authorization: Bearer {self.token}", "Content-Type: application/json")

    def rest_execute_call(self, agent_id: str) -> HttpCall:
        """POST /api/v1/agents/{id}/execute."""
        body = json.dumps({"prompt": PROMPT}).encode()
        url = self.rest_url(f"/api/v1/agents/{agent_id}/execute")
        return HttpCall(url, "POST", body, self.rest_headers())

    def rest_get_job_call(self, job_id: str) -> HttpCall:
        """GET /api/v1/jobs/{id}."""
        return HttpCall(self.rest_url(f"/api/v1/jobs/{job_id}"), headers=self.rest_headers())

    def rest_get_random_job_call(self, job_ids: tuple[str, ...]) -> HttpCall:
        """GET /api/v1/jobs/{id}, each request for a random one of `job_ids`."""
        return HttpCall(self.rest_url("/api/v1/jobs/"), headers=self.rest_headers(), ids=job_ids)


def check_http(call: HttpCall) -> None:
    """Make the request once with urllib; raise unless it answers 2xx."""
    headers = dict(header.split(": ", 1) for header in call.headers)
    url = call.url + (call.ids[0] if call.ids else "")
    request = urllib.request.Request(url, data=call.body, headers=headers, method=call.method)
    with urllib.request.urlopen(request, timeout=10) as response:
        if not 200 <= response.status < 300:
            raise RuntimeError(f"{call.method} {url} answered {response.status}")
