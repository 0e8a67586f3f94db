"""`python -m bench`: run every workload and baseline, write bench/results/ (see README.md)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import traceback
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
import redis

from bench import report
from bench.config import BenchConfig, from_args, parser
from bench.deployment import Deployment
from bench.loadgen import LoadGenerator, Tools, find_tools
from bench.measure_agentq import measure_config
from bench.measure_baselines import measure_baselines
from bench.measure_latency import CHUNKS, LONG_STREAM_CHUNKS, measure_latency
from bench.procs import ProcessSet
from bench.profiling import Profiler, find_py_spy, summary_markdown
from bench.runs import Context
from bench.stack import agentq_env

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY_NOTE = (
    "Each run is closed-loop: the load generator keeps N calls in flight. gRPC runs "
    "use one HTTP/2 connection with N streams (as one gRPC channel would); HTTP runs use "
    "N keep-alive connections. The bare REST→gRPC hop runs its FastAPI app and its echo "
    "gRPC server in one process on one event loop, as `agentq serve` hosts REST and gRPC."
)
OTHERS_NOTE = (
    "cores used: how much CPU each party used during a run, in cores: the processes the "
    "harness started (serve, workers, echo, hop...), postgres, redis, the load generator, "
    "and others, programs outside the harness. This machine has 2: when `others` is above "
    "about 0.2 someone else's work disturbed the figure, and it is worth repeating."
)
WORKER_NOTE = (
    "PostgreSQL + Redis: the `agentq worker` processes run during the end-to-end run "
    "and afterwards work off the backlog the API runs queued; they are stopped during "
    "the API runs, so the server has the machine as the bare baselines do "
    "(--workers-during-api keeps them)."
)

LATENCY_NOTE = (
    "Latency-bound workload: the provider is a fake OpenAI-compatible server in its own "
    "process (its CPU shows as `provider`) answering each call after the set latency. "
    "PostgreSQL + Redis: the workers are paused (SIGSTOP) while every execution is "
    "queued, their memory before the drain read then, and resumed together. Embedded: "
    "the engine runs in the server, so it starts on the first execution queued, and its "
    "memory growth includes serving the Executes."
)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every workload ran and was verified."""
    config = from_args(parser().parse_args(argv))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = config.results_dir / stamp
    for sub in ("logs", "scratch", *(["profiles"] if config.profile else [])):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    _install_watchdog(config.max_run_s)
    tools = find_tools(install=config.install_tools, force_python=config.python_loadgen)
    procs = ProcessSet(run_dir / "logs")
    ctx = Context(
        config=config,
        gen=LoadGenerator(tools, run_dir / "scratch", grpc_connections=config.grpc_connections),
        procs=procs,
        agentq=config.agentq or str(Path(sys.executable).parent / "agentq"),
        profiler=_profiler(config, run_dir),
        notes=[*tools.notes, TOPOLOGY_NOTE, OTHERS_NOTE],
    )
    meta = _meta(config, tools, ctx.agentq)
    results: dict[str, Any] = {"meta": meta, "baselines": {}, "configs": {}, "latency": {}}
    status = 0
    try:
        _run_all(ctx, results, run_dir / "scratch")
    except BaseException as error:
        status = 1
        ctx.notes.append(f"RUN FAILED: {error!r} (partial results; logs in {run_dir.name}/logs)")
        traceback.print_exc()
    finally:
        procs.stop_all()
        shutil.rmtree(run_dir / "scratch", ignore_errors=True)
    results["notes"] = ctx.notes
    results["targets"] = report.judge_targets(results)
    results["latency_targets"] = report.judge_latency_targets(results)
    if ctx.profiler is not None:
        results["profiles"] = [summary_markdown(s) for s in ctx.profiler.summaries]
    json_path, md_path = report.write(results, run_dir)
    for path in (json_path, md_path):
        shutil.copyfile(path, config.results_dir / f"latest{path.suffix}")
    print(md_path.read_text())
    print(f"bench: results in {md_path.parent}", file=sys.stderr)
    return status


def _run_all(ctx: Context, results: dict[str, Any], scratch: Path) -> None:
    config = ctx.config
    postgres_ok, redis_ok = _reachable_postgres(config), _reachable_redis(config)
    both = postgres_ok and redis_ok
    if not both and ("postgres" in config.configs or config.latency):
        ctx.notes.append(
            "PostgreSQL + Redis not measured: "
            f"PostgreSQL {'up' if postgres_ok else 'unreachable'}, "
            f"Redis {'up' if redis_ok else 'unreachable'} "
            "(--postgres-url / --redis-url point elsewhere)"
        )
    if config.tracing:
        ctx.config = config = replace(config, tracing_endpoint=_start_otlp_sink(ctx))
    # The baselines are what the two configurations' figures are compared with.
    if config.baselines and config.configs:
        results["baselines"] = measure_baselines(ctx, redis_available=redis_ok)
    for kind in config.configs:
        if kind == "postgres" and not both:
            continue
        if kind == "postgres":
            ctx.notes.append(WORKER_NOTE)
        ctx.say(f"configuration {kind}")
        results["configs"][kind] = measure_config(ctx, Deployment(kind, config, scratch))
    if config.latency:
        ctx.say("latency-bound workload")
        ctx.notes.append(LATENCY_NOTE)
        results["latency"] = measure_latency(ctx, scratch, postgres=both)


def _start_otlp_sink(ctx: Context) -> str:
    """Start the OTLP receiver the traced processes export to; its endpoint."""
    argv = [sys.executable, "-m", "bench.otlp_sink"]
    sink = ctx.procs.start("otlp-sink", argv, env=agentq_env({}))
    port = sink.wait_for_port(r"otlp sink listening on port (\d+)")
    ctx.notes.append(
        "Traced: every agentq process exports its spans over OTLP/gRPC to a receiver of the "
        "run's (its CPU shows as `otlp-sink`)."
    )
    return f"http://127.0.0.1:{port}"


def _profiler(config: BenchConfig, run_dir: Path) -> Profiler | None:
    if not config.profile:
        return None
    py_spy = find_py_spy()
    if py_spy is None:
        raise SystemExit("--profile needs py-spy, and pip could not install it")
    return Profiler(py_spy, run_dir / "profiles")


def _reachable_postgres(config: BenchConfig) -> bool:
    url = config.postgres_url.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(url, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _reachable_redis(config: BenchConfig) -> bool:
    try:
        client = redis.Redis.from_url(config.redis_url, socket_connect_timeout=3)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


def _meta(config: BenchConfig, tools: Tools, agentq: str) -> dict[str, Any]:
    mode = "quick (smoke test: figures not meaningful)" if config.quick else "full"
    return {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "agentq_version": _version(),
        "commit": _commit(_source_tree(agentq)),
        "cpus": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "mode": mode + (", profiled (py-spy perturbs figures)" if config.profile else ""),
        "metrics": "on" if config.metrics else "off",
        "tracing": "on" if config.tracing else "off",
        "duration_s": config.duration_s,
        "warmup_s": config.warmup_s,
        "in_flight": list(config.in_flight),
        "top_in_flight": config.top_in_flight,
        "e2e_count": config.e2e_count,
        "latency_s": config.latency_s,
        "latency_jobs": config.latency_jobs,
        "latency_chunks": [CHUNKS, LONG_STREAM_CHUNKS],
        "scale_sizes": list(config.scale_sizes),
        "worker_processes": config.worker_processes,
        "worker_concurrency": config.worker_concurrency,
        "noop_threads": config.noop_threads,
        "load_tools": _tool_names(tools),
    }


def _tool_names(tools: Tools) -> str:
    grpc = _first_line([tools.h2load, "--version"]) if tools.h2load else "Python (grpc.aio)"
    http = _first_line([tools.wrk, "-v"]) if tools.wrk else "Python (httpx)"
    return f"gRPC {grpc}; HTTP {http}"


def _first_line(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    text = (done.stdout or done.stderr).strip()
    return " ".join(text.splitlines()[0].split()[:2]) if text else argv[0]


def _version() -> str:
    try:
        return metadata.version("agentq")
    except metadata.PackageNotFoundError:
        return "unknown"


def _source_tree(agentq: str) -> Path:
    """Where the measured agentq's code lives (an editable install's checkout)."""
    python = Path(agentq).parent / "python"
    if not python.exists():
        return REPO
    probe = "import pathlib, server; print(pathlib.Path(server.__file__).parent.parent)"
    done = subprocess.run(
        [str(python), "-c", probe], cwd="/", capture_output=True, text=True, check=False
    )
    return Path(done.stdout.strip()) if done.returncode == 0 else REPO


def _git(tree: Path, *args: str) -> str:
    """What `git ARGS` printed in `tree`, stripped."""
    done = subprocess.run(["git", *args], cwd=tree, capture_output=True, text=True, timeout=10)
    return done.stdout.strip()


def _commit(tree: Path) -> str:
    try:
        head = _git(tree, "rev-parse", "--short", "HEAD")
        dirty = _git(tree, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' (with uncommitted changes)' if dirty else ''}" if head else "unknown"


def _memory_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def _install_watchdog(limit_s: float) -> None:
    """End the run (cleanly: the finally blocks stop every child) past its time limit."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"the run passed its limit of {limit_s:g} s")

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGALRM, expire)
    signal.signal(signal.SIGTERM, terminate)
    signal.alarm(int(limit_s))


if __name__ == "__main__":
    sys.exit(main())
