"""What the tests of the metrics share: agentq processes serving metrics on free ports, their
scrapes, and a REST client that tallies each request it sends by route and status."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from server.settings import Settings
from tests.e2e.cli_helpers import free_port
from tests.e2e.harness import REPLICA_START_TIMEOUT_S, env_for
from tests.metric_samples import Key, key, parsed
from tests.processes import ChildProcess, agentq_command, popen

METRICS_LINE = re.compile(r"agentq metrics listening on port (\d+)")
GRPC_LINE = re.compile(r"agentq gRPC listening on port (\d+)")
TIMEOUT_S = 30
FINISHED = ("completed", "failed", "cancelled")
# The RPC behind each REST route the tests call (its google.api.http binding).
RPCS = {
    "/health": "/agentq.v1.SystemService/GetHealth",
    "/api/v1/agents": "/agentq.v1.AgentService/ListAgents",
    "POST /api/v1/agents": "/agentq.v1.AgentService/CreateAgent",
    "/api/v1/agents/{agent_id}/execute": "/agentq.v1.AgentService/Execute",
    "/api/v1/jobs/{job_id}": "/agentq.v1.JobService/GetJob",
    "/api/v1/jobs/{job_id}/cancel": "/agentq.v1.JobService/CancelJob",
    "/admin/tenants/{tenant_id}/limits": "/agentq.v1.AdminService/SetTenantLimits",
}
CODES = {200: "OK", 201: "OK", 202: "OK", 429: "RESOURCE_EXHAUSTED"}


def scrape(port: int) -> dict[Key, float]:
    """What the process serving metrics on `port` counts now, parsed by prometheus-client."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text
    return parsed(response.text)


def total(*scrapes: Mapping[Key, float]) -> dict[Key, float]:
    """The scrapes of several processes added up."""
    summed: Counter[Key] = Counter()
    for scraped in scrapes:
        summed.update(scraped)
    return dict(summed)


def named(scraped: Mapping[Key, float], *prefixes: str) -> dict[Key, float]:
    """The samples of `scraped` whose name starts with one of `prefixes` and are not 0."""
    return {n: v for n, v in scraped.items() if n[0].startswith(prefixes) and v}


class Tally:
    """A client of the REST shim that counts every request it sends, as the shim should."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=TIMEOUT_S)
        self.sent: Counter[tuple[str, str, int]] = Counter()

    def call(
        self, method: str, route: str, headers: Mapping[str, str], json: Any = None, **path: str
    ) -> httpx.Response:
        """Send `method` to the route template `route`, its `{names}` filled from `path`."""
        response = self.http.request(method, route.format(**path), headers=headers, json=json)
        self.sent[method, route, response.status_code] += 1
        return response

    def wait_status(self, job_id: str, headers: Mapping[str, str], *wanted: str) -> dict[str, Any]:
        """Poll the job until its status is one of `wanted` (by default, finished)."""
        deadline = time.monotonic() + TIMEOUT_S * 2
        while True:
            response = self.call("GET", "/api/v1/jobs/{job_id}", headers, job_id=job_id)
            job: dict[str, Any] = response.json()
            if job["status"] in (wanted or FINISHED):
                return job
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
            time.sleep(0.05)

    def http_counts(self) -> dict[Key, float]:
        """The shim's request counters and histogram counts these requests make."""
        counts: dict[Key, float] = {}
        for (method, route, status), sent in self.sent.items():
            labels = {"method": method, "route": route, "status": str(status)}
            counts[key("agentq_http_requests_total", **labels)] = sent
            counts[key("agentq_http_request_duration_seconds_count", **labels)] = sent
        return counts

    def grpc_counts(self) -> dict[Key, float]:
        """The server's call counters and histogram counts these requests make behind it."""
        counts: Counter[Key] = Counter()
        for (method, route, status), sent in self.sent.items():
            rpc = RPCS.get(f"{method} {route}", RPCS[route])
            labels = {"rpc": rpc, "code": CODES[status]}
            counts[key("agentq_grpc_requests_total", **labels)] += sent
            counts[key("agentq_grpc_request_duration_seconds_count", **labels)] += sent
        return dict(counts)

    def close(self) -> None:
        self.http.close()


class MetricsProcess(ChildProcess):
    """An `agentq` command that serves metrics on free ports, one per process it runs."""

    def __init__(self, args: list[str], env: dict[str, str], *, processes: int = 1) -> None:
        super().__init__(popen(agentq_command(*args), env=env))
        self.start_reading()
        pattern = re.compile(f"(?s)({METRICS_LINE.pattern}.*){{{processes}}}")
        printed = self.wait_text(pattern, stream="stdout", timeout_s=REPLICA_START_TIMEOUT_S)
        self.metrics_ports = [int(port) for port in METRICS_LINE.findall(printed)]
        if len(self.metrics_ports) != processes:
            self.stop()
            raise AssertionError(f"agentq {' '.join(args)} serves no metrics:\n{self.output}")

    def wait_for(self, pattern: str, count: int = 1) -> str:
        """All it printed once `pattern` was printed `count` times; stopped if it never is."""
        wanted = re.compile(f"(?s)({pattern}.*){{{count}}}")
        printed = self.wait_text(wanted, stream="stdout", timeout_s=REPLICA_START_TIMEOUT_S)
        if not wanted.search(printed):
            self.stop()
            raise AssertionError(f"no {pattern!r} from agentq:\n{self.output}")
        return printed

    def scrape(self) -> dict[Key, float]:
        """Its processes' scrapes, added up."""
        return total(*(scrape(port) for port in self.metrics_ports))


@contextmanager
def serving(settings: Settings, *args: str) -> Iterator[tuple[MetricsProcess, int]]:
    """`agentq serve ARGS` with metrics on a free port; yields it and its gRPC port."""
    process = MetricsProcess(["serve", *args], env_for(settings))
    try:
        found = GRPC_LINE.search(process.wait_for(GRPC_LINE.pattern))
        assert found is not None
        yield process, int(found.group(1))
    finally:
        process.stop(timeout_s=20)


@contextmanager
def rest_serving(settings: Settings, grpc_port: int) -> Iterator[tuple[MetricsProcess, str]]:
    """`agentq rest` with metrics on a free port, calling gRPC at `grpc_port`; its URL."""
    port = free_port()
    env = env_for(settings) | {
        "AGENTQ_GRPC_TARGET": f"127.0.0.1:{grpc_port}",
        "AGENTQ_HTTP_ADDR": f"127.0.0.1:{port}",
    }
    process = MetricsProcess(["rest"], env)
    try:
        process.wait_for("Application startup complete")
        yield process, f"http://127.0.0.1:{port}"
    finally:
        process.stop(timeout_s=20)


@contextmanager
def working(settings: Settings, processes: int) -> Iterator[MetricsProcess]:
    """`agentq worker --processes N`, each process serving metrics on a free port."""
    args = ["worker", "--processes", str(processes)]
    process = MetricsProcess(args, env_for(settings), processes=processes)
    try:
        process.wait_for("agentq worker ready", processes)
        yield process
    finally:
        process.stop(timeout_s=30)
