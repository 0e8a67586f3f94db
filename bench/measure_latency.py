"""The latency-bound workload: executions whose provider takes seconds to answer.

A fake OpenAI-compatible server (`bench/fake_openai.py`, its own process) answers each
chat completion after `latency_s`, streamed in a few chunks. N executions, each with its
own prompt, are queued before any worker runs; then the workers start and work them
off. What it shows: how many executions agentq keeps waiting on the provider at once,
what each costs in memory, and that each calls the provider exactly once.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.db import Database
from bench.deployment import Deployment
from bench.machine import OTHERS, CpuMeter
from bench.procs import RssSampler
from bench.runs import Context
from bench.stack import (
    PROMPT,
    SUBJECT,
    Client,
    agentq_env,
    run_cli,
    start_server,
    start_workers,
)
from bench.stats import percentile

FAKE_READY = r"fake-openai listening on port (\d+)"
CHUNKS = 4
# The variant whose answers stream in many pieces: the work per chunk must not cost
# throughput.
LONG_STREAM_CHUNKS = 200
QUEUE_IN_FLIGHT = 64
TOKEN_TTL_S = "14400"


def measure_latency(ctx: Context, scratch: Path, *, postgres: bool) -> dict[str, Any]:
    """Each configuration's runs: PostgreSQL + Redis (4 and 200 chunks), then embedded."""
    results: dict[str, Any] = {}
    for kind in ("postgres", "embedded") if postgres else ("embedded",):
        deployment = Deployment(kind, ctx.config, scratch)
        try:
            runs = {"main": run_once(ctx, deployment, chunks=CHUNKS)}
            if kind == "postgres":
                runs["long_stream"] = run_once(ctx, deployment, chunks=LONG_STREAM_CHUNKS)
            results[kind] = runs
        finally:
            deployment.cleanup()
    return results


def run_once(ctx: Context, deployment: Deployment, *, chunks: int) -> dict[str, Any]:
    """Queue the executions, let the engine work them off, wait for the last: the figures."""
    label = f"latency_{deployment.kind}_{chunks}_chunks"
    # Process names (log files, the cores-used column): `latency-postgres-4-workers`.
    name = f"latency-{deployment.kind}-{chunks}"
    with contextlib.ExitStack() as stops:
        fake = ctx.procs.start(f"{name}-provider", _fake_argv(ctx, chunks), env=agentq_env({}))
        stops.callback(ctx.procs.stop, fake)
        fake_port = fake.wait_for_port(FAKE_READY)
        db = deployment.new_database("latency")
        env = {**deployment.env(db), **_provider_env(fake_port)}
        server = start_server(ctx.procs, ctx.agentq, env, f"{name}-serve", rest=False)
        stops.callback(ctx.procs.stop, server.process)
        token = run_cli(
            ctx.agentq, ["token", "--sub", SUBJECT, "--role", "user", "--ttl", TOKEN_TTL_S], env
        )
        client = Client(server, token)
        agent_id = client.create_agent(label)
        prompts = [f"{PROMPT} ({label}, execution {n})" for n in range(ctx.config.latency_jobs)]
        ctx.wait_until_quiet()
        drain = _start_drain(
            ctx,
            deployment,
            env=env,
            name=name,
            client=client,
            agent_id=agent_id,
            prompts=prompts,
            stops=stops,
        )
        with ctx.profiled(label, drain.pid, in_flight=ctx.config.top_in_flight):
            db.wait_finished(agent_id, len(prompts), timeout_s=ctx.config.drain_timeout_s)
        drain.sampler.stop()
        cpu = drain.meter.split()
        stats = _fake_stats(fake_port)
    result = {
        "kind": deployment.kind,
        "chunks": chunks,
        "latency_s": ctx.config.latency_s,
        "processes": drain.processes,
        "concurrency": ctx.config.worker_concurrency,
        "queue_per_s": len(prompts) / drain.queue_s,
        **_job_figures(label, db, agent_id=agent_id, count=len(prompts)),
        **_provider_figures(label, stats, jobs=len(prompts)),
        **_rss_figures(drain.sampler, stats["peak_in_flight"] / drain.processes),
        "cpu": cpu,
        "others_cpu": cpu.get(OTHERS, 0.0),
    }
    ctx.say(
        f"{label}: {result['per_s']:,.0f} completed jobs/s, {result['peak_in_flight']} "
        f"provider calls in flight at the peak, {result['calls_per_job']:.2f} calls per job"
    )
    return result


@dataclass(frozen=True)
class _Drain:
    """The engine working off the queued executions, and what watches it."""

    pid: int
    processes: int
    queue_s: float
    sampler: RssSampler
    meter: CpuMeter


def _start_drain(
    ctx: Context,
    deployment: Deployment,
    *,
    env: dict[str, str],
    name: str,
    client: Client,
    agent_id: str,
    prompts: Sequence[str],
    stops: contextlib.ExitStack,
) -> _Drain:
    """Queue every execution and set the engine on them, watched from its start."""
    if not deployment.separate_workers:
        # The engine runs in the server: watch it from before the first execution.
        pid = client.server.process.pid
        sampler, meter = RssSampler(pid).start(), ctx.cpu_meter()
        stops.callback(sampler.stop)
        queue_s = _queue(client, agent_id, prompts)
        return _Drain(pid, 1, queue_s, sampler, meter)
    workers = start_workers(
        ctx.procs,
        ctx.agentq,
        env,
        f"{name}-workers",
        processes=ctx.config.worker_processes,
        concurrency=ctx.config.worker_concurrency,
    )
    stops.callback(ctx.procs.stop, workers)
    # Paused while the executions are queued: the workers run nothing yet, their memory
    # is that of idle ready processes, and they all start together.
    workers.pause()
    queue_s = _queue(client, agent_id, prompts)
    sampler, meter = RssSampler(workers.pid).start(), ctx.cpu_meter()
    stops.callback(sampler.stop)
    workers.resume()
    return _Drain(workers.pid, ctx.config.worker_processes, queue_s, sampler, meter)


def _fake_argv(ctx: Context, chunks: int) -> list[str]:
    delay = ["--delay", str(ctx.config.latency_s)]
    return [sys.executable, "-m", "bench.fake_openai", *delay, "--chunks", str(chunks)]


def _provider_env(port: int) -> dict[str, str]:
    """agentq's settings for an OpenAI-compatible provider: the fake on `port`."""
    return {
        "AGENTQ_PROVIDER": "openai",
        "AGENTQ_OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "AGENTQ_OPENAI_API_KEY": "bench",
        "AGENTQ_OPENAI_MODEL": "bench-model",
    }


def _fake_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=30) as response:
        stats: dict[str, Any] = json.load(response)
    return stats


def _queue(client: Client, agent_id: str, prompts: Sequence[str]) -> float:
    """Queue one execution per prompt over gRPC; the seconds it took."""
    began = time.monotonic()
    client.execute_many(agent_id, prompts, in_flight=QUEUE_IN_FLIGHT)
    return time.monotonic() - began


def _job_figures(label: str, db: Database, *, agent_id: str, count: int) -> dict[str, Any]:
    """Completed jobs/s from the first start to the last completion, and latencies."""
    lifetimes = db.job_lifetimes(agent_id)
    statuses = Counter(status for status, *_ in lifetimes)
    if len(lifetimes) != count or statuses != {"completed": count}:
        raise RuntimeError(f"{label}: {len(lifetimes)} jobs of {count}, {dict(statuses)}")
    began = [start for _, _, start, _ in lifetimes if start is not None]
    done = [end for _, _, _, end in lifetimes if end is not None]
    seconds = (max(done) - min(began)).total_seconds()
    waited = [_ms(queued, end) for _, queued, _, end in lifetimes if end is not None]
    ran = [_ms(start, end) for _, _, start, end in lifetimes if start and end]
    return {
        "jobs": count,
        "failed": statuses["failed"],
        "seconds": seconds,
        "per_s": count / seconds,
        "queued_p50_ms": percentile(waited, 50),
        "queued_p99_ms": percentile(waited, 99),
        "run_p50_ms": percentile(ran, 50),
        "run_p99_ms": percentile(ran, 99),
    }


def _ms(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() * 1000


def _provider_figures(label: str, stats: dict[str, Any], *, jobs: int) -> dict[str, Any]:
    """What the fake provider saw; every job must have reached it with its own prompt."""
    per_prompt: dict[str, int] = stats["calls_per_prompt"]
    if len(per_prompt) != jobs or stats["completed"] < jobs:
        raise RuntimeError(
            f"{label}: the provider saw {len(per_prompt)} prompts and answered "
            f"{stats['completed']} calls for {jobs} completed jobs of as many prompts"
        )
    return {
        "peak_in_flight": stats["peak_in_flight"],
        "calls": stats["calls"],
        "calls_per_job": stats["calls"] / jobs,
        "max_calls_per_prompt": max(per_prompt.values()),
        "disconnects": stats["disconnects"],
    }


def _rss_figures(sampler: RssSampler, in_flight_per_process: float) -> dict[str, Any]:
    """Each engine process's memory; the growth of the worst per execution in flight."""
    rss = [
        {"pid": pid, "before_mb": before / 2**20, "peak_mb": sampler.peak[pid] / 2**20}
        for pid, before in sorted(sampler.before.items())
    ]
    growth = max((sampler.peak[pid] - before for pid, before in sampler.before.items()), default=0)
    per_job = growth / 1024 / in_flight_per_process if in_flight_per_process else None
    return {"rss": rss, "rss_per_job_in_flight_kb": per_job}
