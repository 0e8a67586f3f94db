"""`python -m bench.ab`: two builds or settings of agentq measured side by side, in turns.

Two full runs of `python -m bench` on a shared machine can differ by more than the cost a
change is suspected of (tens of percent, as other programs come and go), so a comparison
of two runs made minutes apart cannot show a 5% difference. Here both sides run at the
same time, each on a database of its own, and every workload takes turns: short runs
of A and B, in the order AB, BA, AB, ..., so whatever disturbs the machine falls on both.
Each round gives one ratio B / A; the report shows their median and range, for
throughput and for the server's CPU per answered call (bench/ab_report.py).

    python -m bench.ab --a-env AGENTQ_METRICS_ADDR=                # metrics off vs on
    python -m bench.ab --a-agentq ../old/.venv/bin/agentq          # an older build vs this

Both sides start with the full run's settings (bench/deployment.py: metrics on a free
port, zero provider latency), then their `--a-env` / `--b-env` on top.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import ab_report
from bench.ab_latency import SideDeployment, latency_turn, variants
from bench.config import CONFIGS, RESULTS_DIR, BenchConfig
from bench.db import FINISHED_STATUSES, Database
from bench.loadgen import LoadGenerator, LoadResult, find_tools
from bench.machine import OTHERS, CpuMeter
from bench.measure_agentq import TOKEN_TTL_S, end_to_end
from bench.procs import ManagedProcess, ProcessSet
from bench.runs import Context, require_no_errors
from bench.stack import SUBJECT, Client, check_http, run_cli, start_server, start_workers

# The API workloads: name -> (protocol, whether each call queues a job).
WORKLOADS = {
    "grpc_get_job": ("grpc", False),
    "rest_get_job": ("http", False),
    "grpc_execute": ("grpc", True),
    "rest_execute": ("http", True),
}


@dataclass
class Side:
    """One of the two agentq's of a configuration: its server, database and client."""

    name: str
    agentq: str
    # The configuration with this side's settings on top.
    deployment: SideDeployment
    db: Database | None = None
    client: Client | None = None
    server: ManagedProcess | None = None
    workers: ManagedProcess | None = None
    job_id: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def start(self, ctx: Context) -> None:
        """A fresh database, `agentq serve` on it, a token, one completed job."""
        kind = self.deployment.kind
        self.db = self.deployment.new_database(self.name)
        self.env = self.deployment.env(self.db)
        server = start_server(ctx.procs, self.agentq, self.env, f"{self.name}-{kind}-serve")
        self.server = server.process
        argv = ["token", "--sub", SUBJECT, "--role", "user", "--ttl", TOKEN_TTL_S]
        self.client = Client(server, run_cli(self.agentq, argv, self.env))
        # Only one side's workers run at a time: both sides' pools at once could pass
        # PostgreSQL's max_connections (100 by default).
        if self.deployment.separate_workers:
            self.start_workers(ctx)
        self.job_id = self.client.execute(self.client.create_agent("ab"))
        self.client.wait_completed(self.job_id)
        self.stop_workers(ctx)

    def start_workers(self, ctx: Context) -> None:
        self.workers = start_workers(
            ctx.procs,
            self.agentq,
            self.env,
            f"{self.name}-{self.deployment.kind}-workers",
            processes=ctx.config.worker_processes,
            concurrency=ctx.config.worker_concurrency,
        )

    def stop_workers(self, ctx: Context) -> None:
        if self.workers is not None:
            ctx.procs.stop(self.workers)
            self.workers = None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = replace(
        BenchConfig(),
        duration_s=args.duration,
        warmup_s=args.warmup,
        in_flight=tuple(args.in_flight),
        e2e_count=args.e2e_count,
        configs=tuple(args.only),
        latency_jobs=args.latency_jobs,
        latency_s=args.llm_latency_s,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = args.results_dir / f"{stamp}-ab"
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "scratch").mkdir()
    tools = find_tools(install=True, force_python=False)
    procs = ProcessSet(run_dir / "logs")
    here = str(Path(sys.executable).parent / "agentq")
    ctx = Context(config, LoadGenerator(tools, run_dir / "scratch"), procs, here)
    sides = {
        "a": (args.a_agentq or here, _pairs(args.a_env)),
        "b": (args.b_agentq or here, _pairs(args.b_env)),
    }
    results: dict[str, Any] = {
        "meta": {
            "started": stamp,
            "a": {"label": args.a_label, "agentq": sides["a"][0], "env": sides["a"][1]},
            "b": {"label": args.b_label, "agentq": sides["b"][0], "env": sides["b"][1]},
            "rounds": args.rounds,
            "e2e_rounds": args.e2e_rounds,
            "duration_s": config.duration_s,
            "in_flight": list(config.in_flight),
            "e2e_count": config.e2e_count,
            "latency_rounds": args.latency_rounds,
            "latency_jobs": config.latency_jobs,
            "latency_s": config.latency_s,
        },
        "configs": {},
    }
    for kind in config.configs:
        ctx.say(f"configuration {kind}")
        scratch = run_dir / "scratch"
        pair = [
            Side(name, agentq, SideDeployment(kind, config, scratch, settings=env))
            for name, (agentq, env) in sides.items()
        ]
        try:
            results["configs"][kind] = _measure(ctx, pair, args)
        finally:
            procs.stop_all()
            for side in pair:
                side.deployment.cleanup()
    print(ab_report.write(results, run_dir))
    return 0


def _measure(ctx: Context, pair: list[Side], args: argparse.Namespace) -> dict[str, Any]:
    rounds: dict[str, list[dict[str, dict[str, float]]]] = {}
    for label, chunks in variants(args.workloads).items():
        for number in range(args.latency_rounds):
            rounds.setdefault(label, []).append(
                {
                    side.name: latency_turn(
                        ctx,
                        side=side.deployment,
                        agentq=side.agentq,
                        chunks=chunks,
                        logs=ctx.procs.log_dir / f"{label}-{number}-{side.name}",
                    )
                    for side in _turns(pair, number)
                }
            )
        ctx.say(f"{label}: {ab_report.brief(rounds[label])}")
    for side in pair:
        side.start(ctx)
    for number in range(args.e2e_rounds if "e2e" in args.workloads else 0):
        rounds.setdefault("e2e", []).append(
            {side.name: _e2e(ctx, side) for side in _turns(pair, number)}
        )
    for workload, (protocol, queues) in WORKLOADS.items():
        if workload not in args.workloads:
            continue
        for in_flight in ctx.config.in_flight:
            label = f"{workload}_{in_flight}"
            calls = {side.name: _call(side, workload, protocol) for side in pair}
            for side in pair:
                _warm(ctx, calls[side.name], protocol, in_flight)
            for number in range(args.rounds):
                rounds.setdefault(label, []).append(
                    {
                        side.name: _api_run(
                            ctx, side, calls[side.name], protocol, in_flight, queues
                        )
                        for side in _turns(pair, number)
                    }
                )
            ctx.say(f"{label}: {ab_report.brief(rounds[label])}")
    return rounds


def _turns(pair: list[Side], number: int) -> list[Side]:
    """AB, BA, AB, ...: each side goes first as often as the other."""
    return pair if number % 2 == 0 else pair[::-1]


def _call(side: Side, workload: str, protocol: str) -> Any:
    assert side.client is not None
    client = side.client
    if workload.endswith("get_job"):
        return (
            client.get_job_call(side.job_id)
            if protocol == "grpc"
            else client.rest_get_job_call(side.job_id)
        )
    agent_id = client.create_agent(workload)
    return (
        client.execute_call(agent_id) if protocol == "grpc" else client.rest_execute_call(agent_id)
    )


def _load(ctx: Context, call: Any, protocol: str, in_flight: int, seconds: float) -> LoadResult:
    if protocol == "grpc":
        return ctx.gen.grpc(call, in_flight=in_flight, duration_s=seconds)
    return ctx.gen.http(call, in_flight=in_flight, duration_s=seconds)


def _warm(ctx: Context, call: Any, protocol: str, in_flight: int) -> None:
    if protocol == "grpc":
        call.invoke()
    else:
        check_http(call)
    if ctx.config.warmup_s > 0:
        _load(ctx, call, protocol, in_flight, ctx.config.warmup_s)


def _api_run(
    ctx: Context, side: Side, call: Any, protocol: str, in_flight: int, queues: bool
) -> dict[str, float]:
    """One measured run: calls/s, p50, and the server's CPU milliseconds per answer."""
    assert side.server is not None and side.db is not None
    engine_runs = queues and not side.deployment.separate_workers
    ctx.wait_until_quiet()
    finished = side.db.count_jobs(statuses=FINISHED_STATUSES) if engine_runs else 0
    meter, began = CpuMeter.start(ctx.procs.roots()), time.monotonic()
    result = _load(ctx, call, protocol, in_flight, ctx.config.duration_s)
    cores, elapsed = meter.split(), time.monotonic() - began
    require_no_errors(f"{side.name} {protocol} at {in_flight}", result)
    figures = {"per_s": result.rps, "p50_ms": result.p50_ms}
    if engine_runs:
        # The embedded engine works the jobs off in the server, during the turn as much
        # as its scheduling lets it: how many it finished is part of what the CPU bought.
        finished = side.db.count_jobs(statuses=FINISHED_STATUSES) - finished
        figures["finished_per_call"] = finished / max(result.ok, 1)
        # Let it finish before the other side's turn, so neither runs against the
        # other's backlog.
        side.db.wait_drained(timeout_s=ctx.config.drain_timeout_s)
    server_cpu_s = cores.get(side.server.name, 0.0) * elapsed
    figures["cpu_ms_per_call"] = 1000 * server_cpu_s / max(result.ok, 1)
    figures["others_cores"] = cores.get(OTHERS, 0.0)
    return figures


def _e2e(ctx: Context, side: Side) -> dict[str, float]:
    """One end-to-end turn; the side's workers (PostgreSQL) run for its length only, so
    the API runs, as in the full run, have the machine to themselves."""
    assert side.client is not None and side.db is not None and side.server is not None
    if side.deployment.separate_workers:
        side.start_workers(ctx)
    try:
        pid = side.workers.pid if side.workers else side.server.pid
        done = end_to_end(ctx, side.client, side.db, label=f"{side.name}_e2e", pid=pid)
    finally:
        side.stop_workers(ctx)
    return {"per_s": done["per_s"], "p50_ms": done["p50_ms"], "others_cores": done["others_cpu"]}


def _pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected NAME=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    p.add_argument("--a-agentq", help="side A's agentq executable (default: this checkout's)")
    p.add_argument("--b-agentq", help="side B's agentq executable (default: this checkout's)")
    p.add_argument("--a-env", action="append", default=[], help="NAME=VALUE for side A")
    p.add_argument("--b-env", action="append", default=[], help="NAME=VALUE for side B")
    p.add_argument("--a-label", default="A", help="what side A is, for the report")
    p.add_argument("--b-label", default="B", help="what side B is, for the report")
    p.add_argument("--rounds", type=int, default=8, help="turns of each API workload (8)")
    p.add_argument("--e2e-rounds", type=int, default=3, help="turns of the end-to-end run (3)")
    p.add_argument("--e2e-count", type=int, default=3000, help="executions per end-to-end turn")
    p.add_argument("--duration", type=float, default=4.0, help="seconds of each API turn (4)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per side (1)")
    p.add_argument(
        "--in-flight",
        type=lambda s: [int(n) for n in s.split(",")],
        default=[64],
        help="concurrencies, comma-separated (64)",
    )
    p.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where results go (bench/results)"
    )
    p.add_argument(
        "--workloads",
        type=lambda s: s.split(","),
        default=["e2e", *WORKLOADS],
        help=f"workloads, comma-separated: e2e,{','.join(WORKLOADS)} (these by default), "
        "latency (the latency-bound runs, 4 and 200 chunks; or latency_4, latency_200)",
    )
    p.add_argument(
        "--latency-rounds", type=int, default=3, help="turns of each latency-bound run (3)"
    )
    p.add_argument(
        "--latency-jobs", type=int, default=5000, help="executions per latency turn (5000)"
    )
    p.add_argument("--llm-latency-s", type=float, default=2.0, help="the fake provider's delay (2)")
    p.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=list(CONFIGS),
        help="configurations: embedded,postgres (both)",
    )
    return p


if __name__ == "__main__":
    sys.exit(main())
