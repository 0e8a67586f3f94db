"""Load generators: h2load for gRPC, wrk for HTTP, a Python fallback for either.

Every run is closed-loop: `in_flight` calls outstanding at all times, for a duration
or until a count is done. Results carry what each tool can vouch for: h2load sees HTTP
statuses only (a gRPC error is HTTP 200), so gRPC runs also report the DATA bytes
received, which the caller checks against the size of a successful answer.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.config import REPO_ROOT
from bench.grpcwire import GrpcCall, frame
from bench.stats import percentile

WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")
# Packages that provide the two tools on Debian and Ubuntu.
APT_PACKAGES = ("nghttp2-client", "wrk")
# A load run may overrun its duration by this much before it is taken for hung.
OVERRUN_S = 120.0
# How long wrk waits for one answer before counting it failed. A shared machine can stall
# for seconds; a slow answer is measured as latency, so only a server that never answers
# is an error.
ANSWER_WAIT_S = 60.0


@dataclass(frozen=True)
class HttpCall:
    """One HTTP request: method, URL, optional body and headers; or random ids on a prefix."""

    url: str
    method: str = "GET"
    body: bytes | None = None
    headers: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()


@dataclass
class LoadResult:
    """What one load run measured."""

    tool: str
    in_flight: int
    duration_s: float
    ok: int
    errors: int
    started: int
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    data_bytes: int | None = None
    # CPU other programs on the machine used meanwhile, in cores (bench.machine).
    others_cpu: float | None = None
    # Cores each party used during the run: started processes by name, postgres, redis,
    # the load generator, others.
    cpu: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class Tools:
    """Which load generators this run uses, and why."""

    h2load: str | None
    wrk: str | None
    notes: list[str] = field(default_factory=list)


def find_tools(*, install: bool, force_python: bool) -> Tools:
    """Locate h2load and wrk, installing them with apt-get when allowed and possible."""
    if force_python:
        return Tools(None, None, ["--python-loadgen: the Python load generator drives all runs"])
    tools = Tools(shutil.which("h2load"), shutil.which("wrk"))
    if (tools.h2load and tools.wrk) or not install:
        return _note_fallbacks(tools)
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("bench: installing h2load and wrk with apt-get", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            for argv in (["update", "-qq"], ["install", "-y", "-qq", *APT_PACKAGES]):
                subprocess.run(
                    ["apt-get", *argv],
                    check=False,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=600,
                )
        except subprocess.TimeoutExpired:
            tools.notes.append("apt-get did not finish in time")
        tools = Tools(shutil.which("h2load"), shutil.which("wrk"), tools.notes)
    return _note_fallbacks(tools)


def _note_fallbacks(tools: Tools) -> Tools:
    if tools.h2load is None:
        tools.notes.append(
            "h2load (Debian: nghttp2-client) unavailable: the Python gRPC load generator "
            "was used; it costs the machine far more, so gRPC figures are lower bounds"
        )
    if tools.wrk is None:
        tools.notes.append(
            "wrk unavailable: the Python HTTP load generator was used; it costs the "
            "machine far more, so REST figures are lower bounds"
        )
    return tools


class LoadGenerator:
    """Runs gRPC and HTTP load with the best tool available; scratch files in `work_dir`."""

    def __init__(self, tools: Tools, work_dir: Path, *, grpc_connections: int = 1) -> None:
        self.tools = tools
        self._work_dir = work_dir
        self._grpc_connections = grpc_connections
        self._runs = 0

    def grpc(
        self, call: GrpcCall, *, in_flight: int, duration_s: float = 0, count: int = 0
    ) -> LoadResult:
        """`in_flight` concurrent unary calls for `duration_s` seconds, or `count` calls."""
        if self.tools.h2load is None:
            return self._python(
                "grpc", call, in_flight=in_flight, duration_s=duration_s, count=count
            )
        body = self._scratch("grpc.bin")
        body.write_bytes(frame(call.request))
        log = self._scratch("h2load.log")
        log.unlink(missing_ok=True)  # h2load appends to an existing log
        connections = max(1, min(in_flight, self._grpc_connections))
        streams = math.ceil(in_flight / connections)
        argv = [self.tools.h2load, "-c", str(connections), "-m", str(streams), "-t", "1"]
        argv += ["-D", f"{round(duration_s * 1000)}ms"] if duration_s else ["-n", str(count)]
        for header in call.headers():
            argv += ["-H", header]
        argv += ["-d", str(body), f"--log-file={log}", call.url]
        output = _run(argv, limit_s=(duration_s or count / 50) + OVERRUN_S)
        return parse_h2load(output, log, in_flight=in_flight)

    def http(self, call: HttpCall, *, in_flight: int, duration_s: float) -> LoadResult:
        """`in_flight` keep-alive connections each with one request outstanding."""
        if self.tools.wrk is None:
            return self._python("http", call, in_flight=in_flight, duration_s=duration_s)
        args = [call.method, "-"]
        if call.body is not None:
            body = self._scratch("body.bin")
            body.write_bytes(call.body)
            args[1] = str(body)
        url = call.url
        if call.ids:
            ids = self._scratch("ids.txt")
            ids.write_text("\n".join(call.ids) + "\n")
            path_start = url.index("/", len("http://"))
            args += [str(ids), url[path_start:]]
            url = url[:path_start] + "/"
        threads = 2 if in_flight > 1 else 1
        argv = [self.tools.wrk, "-t", str(threads), "-c", str(in_flight)]
        argv += ["-d", f"{max(1, round(duration_s))}s", "--timeout", f"{ANSWER_WAIT_S:g}s"]
        for header in call.headers:
            argv += ["-H", header]
        argv += ["-s", str(WRK_SCRIPT), url, "--", *args]
        output = _run(argv, limit_s=duration_s + OVERRUN_S)
        return parse_wrk(output, in_flight=in_flight)

    def _python(
        self,
        kind: str,
        call: GrpcCall | HttpCall,
        *,
        in_flight: int,
        duration_s: float,
        count: int = 0,
    ) -> LoadResult:
        spec = self._scratch("pyload.json")
        payload = asdict(call)
        for key in ("request", "body"):
            if isinstance(payload.get(key), bytes):
                payload[key] = payload[key].hex()
        spec.write_text(json.dumps({"kind": kind, "call": payload}))
        argv = [sys.executable, "-m", "bench.pyload", str(spec), str(in_flight)]
        argv += [f"{duration_s:g}", str(count)]
        output = _run(argv, limit_s=(duration_s or count / 20) + OVERRUN_S, cwd=REPO_ROOT)
        result = LoadResult(**json.loads(output.strip().splitlines()[-1]))
        result.notes.append("Python load generator")
        return result

    def _scratch(self, name: str) -> Path:
        self._runs += 1
        return self._work_dir / f"{self._runs:04d}-{name}"


def _run(argv: list[str], *, limit_s: float, cwd: Path | None = None) -> str:
    completed = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=limit_s,
        check=False,
        cwd=cwd or tempfile.gettempdir(),
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{Path(argv[0]).name} failed ({completed.returncode}): "
            f"{completed.stderr.strip() or completed.stdout.strip()}"
        )
    return completed.stdout


def parse_h2load(output: str, log: Path, *, in_flight: int) -> LoadResult:
    """A LoadResult from h2load's summary and its per-request log."""
    fields: dict[str, float] = {}
    for line in output.splitlines():
        words = line.replace(",", "").split()
        if line.startswith("finished in"):
            fields["duration_s"] = _seconds(words[2])
        elif line.startswith("requests:"):
            numbers = {words[i + 1]: int(words[i]) for i in range(1, len(words) - 1, 2)}
            fields["started"] = numbers["started"]
            fields["ok"] = numbers["succeeded"]
            fields["errors"] = numbers["failed"] + numbers["errored"] + numbers["timeout"]
        elif line.startswith("traffic:"):
            fields["data"] = int(words[words.index("data") - 1].strip("()"))
    if "ok" not in fields:
        raise RuntimeError(f"could not read h2load's output:\n{output}")
    latencies = []
    for entry in log.read_text().splitlines():
        _start, status, micros = entry.split("\t")
        if status == "200":
            latencies.append(int(micros) / 1000)
    ok, duration = int(fields["ok"]), fields["duration_s"]
    return LoadResult(
        tool="h2load",
        in_flight=in_flight,
        duration_s=duration,
        ok=ok,
        errors=int(fields["errors"]),
        started=int(fields["started"]),
        rps=ok / duration if duration else 0.0,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        mean_ms=sum(latencies) / len(latencies) if latencies else 0.0,
        data_bytes=int(fields.get("data", 0)),
    )


def _seconds(text: str) -> float:
    """h2load's durations: 12.5s, 502.74ms, 800us."""
    for unit, scale in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


def parse_wrk(output: str, *, in_flight: int) -> LoadResult:
    """A LoadResult from the JSON line that wrk_report.lua prints."""
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    report = json.loads(lines[-1])
    duration = report["duration_us"] / 1e6
    socket_errors = sum(
        report[key] for key in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )
    ok = report["requests"] - report["status_errors"]
    return LoadResult(
        tool="wrk",
        in_flight=in_flight,
        duration_s=duration,
        ok=ok,
        errors=report["status_errors"] + socket_errors,
        started=report["requests"],
        rps=ok / duration if duration else 0.0,
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        mean_ms=report["mean_us"] / 1000,
    )
