"""Scale: get-job latency and server memory with few and with very many jobs stored.

A fresh database is migrated with `agentq migrate`, one real job is run to completion,
and its row is cloned with SQL up to the small size, then up to the large size. At each
size a fresh server answers the same sequence: a warm-up, then get-job calls for random
stored ids over gRPC (one at a time, a real client) and over REST (wrk, one
connection); its resident memory is read after that.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import grpc

from agentq.v1 import job_service_pb2
from bench.db import Database
from bench.deployment import Deployment
from bench.machine import OTHERS
from bench.runs import Context, require_no_errors
from bench.stack import GET_JOB_PATH, SUBJECT, Client, run_cli, start_server, start_workers
from bench.stats import percentile

if TYPE_CHECKING:
    from bench.grpcwire import RawMethod

WARMUP_CALLS = 200
TOKEN_TTL_S = "14400"


def measure_scale(ctx: Context, deployment: Deployment) -> dict[str, Any]:
    """The two scale points of one configuration."""
    db = deployment.new_database("scale")
    env = deployment.env(db)
    run_cli(ctx.agentq, ["migrate"], env)
    token = run_cli(
        ctx.agentq, ["token", "--sub", SUBJECT, "--role", "user", "--ttl", TOKEN_TTL_S], env
    )
    template = _one_completed_job(ctx, deployment, env, token)
    small, large = ctx.config.scale_sizes
    results: dict[str, Any] = {}
    stored = 1
    for size in (small, large):
        began = time.monotonic()
        db.clone_jobs(template, size - stored)
        stored = size
        ctx.say(
            f"{deployment.kind}: {size:,} jobs stored ({time.monotonic() - began:.0f} s to insert)"
        )
        results[str(size)] = _scale_point(ctx, deployment, env, db, token, size)
    return results


def _one_completed_job(
    ctx: Context, deployment: Deployment, env: dict[str, str], token: str
) -> str:
    server = start_server(ctx.procs, ctx.agentq, env, f"{deployment.kind}-scale-template")
    workers = None
    if deployment.separate_workers:
        workers = start_workers(
            ctx.procs,
            ctx.agentq,
            env,
            f"{deployment.kind}-scale-workers",
            processes=1,
            concurrency=1,
        )
    try:
        client = Client(server, token)
        job_id = client.execute(client.create_agent("scale"))
        client.wait_completed(job_id)
        return job_id
    finally:
        if workers is not None:
            ctx.procs.stop(workers)
        ctx.procs.stop(server.process)


def _scale_point(
    ctx: Context,
    deployment: Deployment,
    env: dict[str, str],
    db: Database,
    token: str,
    size: int,
) -> dict[str, Any]:
    count = db.count_jobs()
    if count != size:
        raise RuntimeError(f"{count} jobs stored, {size} expected")
    sample = db.sample_job_ids(ctx.config.scale_samples + WARMUP_CALLS)
    warm, ids = sample[:WARMUP_CALLS], sample[WARMUP_CALLS:]
    server = start_server(ctx.procs, ctx.agentq, env, f"{deployment.kind}-scale-{size}")
    try:
        client = Client(server, token)
        ctx.wait_until_quiet()
        meter = ctx.cpu_meter()
        grpc_ms = _timed_get_jobs(server.grpc_port, client, warm, ids)
        rest = ctx.gen.http(
            client.rest_get_random_job_call(tuple(ids)),
            in_flight=1,
            duration_s=ctx.config.scale_rest_s,
        )
        require_no_errors(f"REST get-job at {size} stored", rest)
        rss = server.process.rss_bytes()
        cpu = meter.split()
    finally:
        ctx.procs.stop(server.process)
    point = {
        "stored": size,
        "grpc_p50_ms": percentile(grpc_ms, 50),
        "grpc_p99_ms": percentile(grpc_ms, 99),
        "rest_p50_ms": rest.p50_ms,
        "rest_p99_ms": rest.p99_ms,
        "rest_rps": rest.rps,
        "rss_mb": rss / 2**20,
        "others_cpu": cpu.get(OTHERS, 0.0),
        "cpu": cpu,
    }
    ctx.say(
        f"{deployment.kind} at {size:,} stored: get-job p50 {point['grpc_p50_ms']:.2f} ms, "
        f"RSS {point['rss_mb']:.0f} MB"
    )
    return point


def _timed_get_jobs(port: int, client: Client, warm: list[str], ids: list[str]) -> list[float]:
    """Latency in ms of one GetJob per id, one at a time, after untimed calls for `warm`."""

    def request(job_id: str) -> bytes:
        return job_service_pb2.GetJobRequest(job_id=job_id).SerializeToString()

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        method: RawMethod = channel.unary_unary(GET_JOB_PATH)
        for job_id in warm:
            method(request(job_id), metadata=client.metadata, timeout=10)
        latencies = []
        for job_id in ids:
            payload = request(job_id)
            began = time.perf_counter()
            reply = method(payload, metadata=client.metadata, timeout=10)
            latencies.append((time.perf_counter() - began) * 1000)
            if job_service_pb2.GetJobResponse.FromString(reply).job.job_id != job_id:
                raise RuntimeError(f"GetJob({job_id}) answered another job")
    return latencies
