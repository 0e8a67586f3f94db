"""What a benchmark run does: durations, counts, sizes and where services are."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CONFIGS = ("embedded", "postgres")
# What `--only` picks from: the two configurations' workloads, and the latency-bound one.
PARTS = (*CONFIGS, "latency")
RESULTS_DIR = Path(__file__).with_name("results")
# The checkout holding bench/: where `python -m bench...` children must start.
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BenchConfig:
    """Every knob of a run; `--quick` swaps in small values."""

    duration_s: float = 8.0
    warmup_s: float = 2.0
    in_flight: tuple[int, ...] = (1, 16, 64)
    e2e_count: int = 5000
    e2e_in_flight: int = 64
    scale_sizes: tuple[int, int] = (10_000, 1_000_000)
    scale_samples: int = 2000
    scale_rest_s: float = 5.0
    worker_processes: int = 2
    # Executions each agentq worker process (and the embedded server) runs at once:
    # agentq's own default, passed explicitly so the report can judge against it.
    worker_concurrency: int = 256
    # Threads of each bare Dramatiq no-op worker process: Dramatiq's own knob, not agentq's.
    noop_threads: int = 8
    drain_timeout_s: float = 600.0
    # The latency-bound workload: a fake provider answering after this long.
    latency_s: float = 2.0
    latency_jobs: int = 5000
    latency: bool = True
    # Before each measured run, wait at most this long for other programs to go quiet.
    quiet_wait_s: float = 5.0
    configs: tuple[str, ...] = CONFIGS
    baselines: bool = True
    postgres_url: str = DEFAULT_POSTGRES_URL
    redis_url: str = DEFAULT_REDIS_URL
    grpc_connections: int = 1
    workers_during_api: bool = False
    profile: bool = False
    python_loadgen: bool = False
    install_tools: bool = True
    results_dir: Path = RESULTS_DIR
    agentq: str = ""
    # agentq's processes serve Prometheus metrics, as deployed; off to measure their cost.
    metrics: bool = True
    # Where agentq's processes export traces (an OTLP sink the run starts); empty for none.
    tracing_endpoint: str = ""
    tracing: bool = False
    max_run_s: float = 2400.0
    quick: bool = False

    @property
    def top_in_flight(self) -> int:
        """The highest concurrency, the one the targets compare."""
        return max(self.in_flight)


QUICK = {
    "duration_s": 1.0,
    "warmup_s": 0.0,
    "e2e_count": 200,
    "scale_sizes": (1_000, 20_000),
    "scale_samples": 100,
    "scale_rest_s": 1.0,
    "drain_timeout_s": 120.0,
    "latency_s": 0.5,
    "latency_jobs": 300,
    "quiet_wait_s": 0.0,
    "max_run_s": 300.0,
}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def parser() -> argparse.ArgumentParser:
    """The command line of `bash bench/run.sh` (and `python -m bench`)."""
    p = argparse.ArgumentParser(
        prog="bench/run.sh",
        description="Benchmark agentq against bare grpc.aio, FastAPI and Dramatiq baselines.",
    )
    p.add_argument(
        "--quick", action="store_true", help="everything briefly (2-3 min): a smoke test"
    )
    p.add_argument("--duration", type=float, help="seconds of each measured load run (default 8)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up before each run (default 2)")
    p.add_argument("--in-flight", type=_ints, help="concurrencies, comma-separated (1,16,64)")
    p.add_argument("--e2e-count", type=int, help="executions of the end-to-end run (5000)")
    p.add_argument("--scale-sizes", type=_ints, help="two stored-job counts (10000,1000000)")
    p.add_argument("--scale-samples", type=int, help="get-job calls timed at each size (2000)")
    p.add_argument("--worker-processes", type=int, help="agentq/Dramatiq worker processes (2)")
    p.add_argument(
        "--worker-concurrency", type=int, help="executions each agentq worker runs at once (256)"
    )
    p.add_argument("--noop-threads", type=int, help="threads per Dramatiq no-op process (8)")
    p.add_argument(
        "--only",
        type=lambda s: tuple(s.split(",")),
        help="parts to run, comma-separated: embedded,postgres,latency (all)",
    )
    p.add_argument(
        "--llm-latency-s", type=float, help="latency workload: the provider's delay (2; quick 0.5)"
    )
    p.add_argument(
        "--latency-jobs", type=int, help="latency workload: executions (5000; quick 300)"
    )
    p.add_argument("--no-baselines", action="store_true", help="skip the bare-library baselines")
    p.add_argument("--postgres-url", help="admin URL of the PostgreSQL server to use")
    p.add_argument("--redis-url", help="URL of the Redis server to use")
    p.add_argument(
        "--quiet-wait",
        type=float,
        help="seconds to wait, before each run, for other programs to go quiet (5; quick 0)",
    )
    p.add_argument("--grpc-connections", type=int, help="HTTP/2 connections h2load opens (1)")
    p.add_argument(
        "--workers-during-api",
        action="store_true",
        help="PostgreSQL config: keep the worker processes running during the API runs",
    )
    p.add_argument("--profile", action="store_true", help="py-spy the processes (perturbs figures)")
    p.add_argument("--python-loadgen", action="store_true", help="use the Python load generator")
    p.add_argument("--no-install", action="store_true", help="never apt-get h2load or wrk")
    p.add_argument("--results-dir", type=Path, help="where results go (bench/results)")
    p.add_argument("--agentq", help="the agentq executable (default: next to this Python)")
    p.add_argument(
        "--no-metrics", action="store_true", help="agentq serves no metrics (to measure their cost)"
    )
    p.add_argument(
        "--tracing",
        action="store_true",
        help="agentq exports traces to an OTLP sink of the run's (to measure their cost)",
    )
    return p


def from_args(args: argparse.Namespace) -> BenchConfig:
    """The config the command line asks for, on top of the defaults or the quick preset."""
    config = BenchConfig(quick=args.quick)
    if args.quick:
        config = replace(config, **QUICK)  # type: ignore[arg-type]
    overrides = {
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "in_flight": args.in_flight,
        "e2e_count": args.e2e_count,
        "scale_sizes": args.scale_sizes,
        "scale_samples": args.scale_samples,
        "worker_processes": args.worker_processes,
        "worker_concurrency": args.worker_concurrency,
        "noop_threads": args.noop_threads,
        "configs": None if args.only is None else tuple(c for c in args.only if c in CONFIGS),
        "latency": None if args.only is None else "latency" in args.only,
        "latency_s": args.llm_latency_s,
        "latency_jobs": args.latency_jobs,
        "postgres_url": args.postgres_url or os.environ.get("AGENTQ_BENCH_POSTGRES_URL"),
        "redis_url": args.redis_url or os.environ.get("AGENTQ_BENCH_REDIS_URL"),
        "grpc_connections": args.grpc_connections,
        "quiet_wait_s": args.quiet_wait,
        "results_dir": args.results_dir,
        "agentq": args.agentq,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if args.scale_sizes is not None and len(args.scale_sizes) != 2:
        raise SystemExit("--scale-sizes takes two numbers, e.g. 10000,1000000")
    unknown = set(args.only or ()) - set(PARTS)
    if unknown:
        raise SystemExit(f"--only: unknown part {', '.join(sorted(unknown))}")
    return replace(
        config,
        baselines=not args.no_baselines,
        workers_during_api=args.workers_during_api,
        profile=args.profile,
        python_loadgen=args.python_loadgen,
        install_tools=not args.no_install,
        metrics=not args.no_metrics,
        tracing=args.tracing,
    )
