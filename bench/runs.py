"""What every workload shares: the run context and measured, verified load series."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bench.config import BenchConfig
from bench.grpcwire import GrpcCall, check_ok, probe_statuses
from bench.loadgen import HttpCall, LoadGenerator, LoadResult
from bench.machine import OTHERS, CpuMeter, wait_until_quiet
from bench.procs import ProcessSet
from bench.profiling import Profiler
from bench.stack import check_http

# A gRPC series: the call of one concurrency, and a check of its result afterwards.
MakeGrpcCall = Callable[[int], GrpcCall]
MakeHttpCall = Callable[[int], HttpCall]
Verify = Callable[[Any, LoadResult], str]
# The call of a series: a GrpcCall or an HttpCall.
CallT = TypeVar("CallT")


@dataclass
class Context:
    """What the workloads need: the config, the load generator, processes, the profiler."""

    config: BenchConfig
    gen: LoadGenerator
    procs: ProcessSet
    agentq: str
    profiler: Profiler | None = None
    notes: list[str] = field(default_factory=list)
    began: float = field(default_factory=time.monotonic)

    def say(self, message: str) -> None:
        """Progress for the person watching, with the minutes and seconds since the start."""
        minutes, seconds = divmod(int(time.monotonic() - self.began), 60)
        print(f"bench [{minutes:02d}:{seconds:02d}] {message}", file=sys.stderr, flush=True)

    def cpu_meter(self) -> CpuMeter:
        """A meter of each process's CPU from now on, naming the harness's children."""
        return CpuMeter.start(self.procs.roots())

    def wait_until_quiet(self) -> None:
        """Before a measured run: give other programs' work a bounded chance to end."""
        wait_until_quiet(max_wait_s=self.config.quiet_wait_s)

    @contextlib.contextmanager
    def profiled(self, label: str, pid: int | None, *, in_flight: int) -> Iterator[None]:
        """Profile `pid` for the duration of the block, at the top concurrency only."""
        if self.profiler is None or pid is None or in_flight != self.config.top_in_flight:
            yield
            return
        with self.profiler.record(label, pid):
            yield


def no_check(call: Any, result: LoadResult) -> str:
    """For runs whose correctness the tool's own error count covers."""
    return "tool reported no errors"


def require_no_errors(label: str, result: LoadResult) -> None:
    """A run with any failed request is worthless: stop with what failed."""
    if result.errors:
        raise RuntimeError(f"{label}: {result.errors} requests failed ({result.to_dict()})")


def grpc_series(
    ctx: Context, label: str, make_call: MakeGrpcCall, verify: Verify, *, pid: int | None = None
) -> dict[str, dict[str, Any]]:
    """For each concurrency: warm up, run for the configured time, verify, record."""

    def run(call: GrpcCall, in_flight: int, duration_s: float) -> LoadResult:
        return ctx.gen.grpc(call, in_flight=in_flight, duration_s=duration_s)

    return _series(ctx, label, make_call, verify, lambda call: check_ok([call]), run, pid)


def http_series(
    ctx: Context, label: str, make_call: MakeHttpCall, verify: Verify, *, pid: int | None = None
) -> dict[str, dict[str, Any]]:
    """The same as grpc_series, over HTTP/1.1 keep-alive."""

    def run(call: HttpCall, in_flight: int, duration_s: float) -> LoadResult:
        return ctx.gen.http(call, in_flight=in_flight, duration_s=duration_s)

    return _series(ctx, label, make_call, verify, check_http, run, pid)


def _series(
    ctx: Context,
    label: str,
    make_call: Callable[[int], CallT],
    verify: Verify,
    check: Callable[[CallT], None],
    run: Callable[[CallT, int, float], LoadResult],
    pid: int | None,
) -> dict[str, dict[str, Any]]:
    """A series over either protocol: `check` makes one call and raises unless it succeeds,
    `run` puts a call under load at a concurrency for a duration."""
    series: dict[str, dict[str, Any]] = {}
    for in_flight in ctx.config.in_flight:
        warm_call = make_call(in_flight)
        check(warm_call)
        if ctx.config.warmup_s > 0:
            run(warm_call, in_flight, ctx.config.warmup_s)
        call = make_call(in_flight)
        ctx.wait_until_quiet()
        meter = ctx.cpu_meter()
        with ctx.profiled(f"{label}_{in_flight}", pid, in_flight=in_flight):
            result = run(call, in_flight, ctx.config.duration_s)
        result.cpu = meter.split()
        result.others_cpu = result.cpu.get(OTHERS, 0.0)
        require_no_errors(f"{label} at {in_flight}", result)
        time.sleep(0.2)  # let calls still in flight when the tool stopped land
        check(call)
        result.notes.append(verify(call, result))
        series[str(in_flight)] = result.to_dict()
        ctx.say(f"{label} in flight {in_flight}: {_brief(result)}")
    return series


def same_size_answers(call: GrpcCall, result: LoadResult) -> str:
    """gRPC errors travel as HTTP 200 with no DATA: every answer must carry a full reply."""
    if result.data_bytes is None:
        return "real gRPC client: every status checked"
    size = call.response_frame_size()
    low, high = result.ok * size, max(result.started, result.ok) * size
    if not low <= result.data_bytes <= high:
        statuses = probe_statuses(call, max(result.in_flight, 16))
        raise RuntimeError(
            f"{call.path}: {result.data_bytes} bytes of DATA for {result.ok} answers of "
            f"{size} bytes: some calls failed with a gRPC status (a burst of real calls "
            f"now ends {statuses})"
        )
    return f"DATA bytes = {result.ok} answers x {size} bytes: no gRPC error"


def _brief(result: LoadResult) -> str:
    return f"{result.rps:,.0f}/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms"
